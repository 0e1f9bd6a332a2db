// The CoreML engine: one graph of a CoreML bundle (an .mlpackage) as a PocketSAMCore `Engine`. CoreML exists only
// on Apple platforms: elsewhere (Linux CI) this module compiles to nothing.
#if canImport(CoreML)
import CoreML
import Foundation
import PocketSAMCore

extension ComputeUnits {
    /// The CoreML setting of these compute units.
    public var mlComputeUnits: MLComputeUnits {
        switch self {
        case .all: return .all
        case .cpuAndNeuralEngine: return .cpuAndNeuralEngine
        case .cpuAndGPU: return .cpuAndGPU
        case .cpuOnly: return .cpuOnly
        }
    }
}

/// One graph of a bundle (pocketsam's `export --format coreml`: an ML Program, float32 inputs and outputs with the
/// contract's names) run by CoreML on the chosen compute units. Inputs are copied into `MLMultiArray`s, outputs
/// are read back through `MLShapedArray<Float>(converting:)`, which handles float16 outputs and padded strides.
public final class CoreMLEngine: Engine {
    public let inputNames: [String]
    public let outputNames: [String]
    public let computeUnits: ComputeUnits
    private let model: MLModel

    /// Load a compiled model (`.mlmodelc`) on `computeUnits`. `graph` ("encoder" or "decoder") orders the names
    /// as the contract does. Throws `PocketSAMError.engine` when CoreML refuses the model on these units.
    public init(compiledModel url: URL, graph: String, contract: Contract, computeUnits: ComputeUnits) throws {
        let config = MLModelConfiguration()
        config.computeUnits = computeUnits.mlComputeUnits
        do {
            model = try MLModel(contentsOf: url, configuration: config)
        } catch {
            throw PocketSAMError.engine("CoreML cannot load the \(graph) on \(computeUnits.rawValue) (\(error.localizedDescription))")
        }
        self.computeUnits = computeUnits
        let desc = model.modelDescription
        // the contract's order first (the session feeds by name; the order is for display and checks)
        func ordered(_ names: Set<String>, _ spec: [String]) -> [String] {
            spec.filter(names.contains) + names.subtracting(spec).sorted()
        }
        inputNames = ordered(Set(desc.inputDescriptionsByName.keys), try contract.inputsOf(graph))
        outputNames = ordered(Set(desc.outputDescriptionsByName.keys), try contract.outputsOf(graph))
    }

    /// Compile the `.mlpackage` at `package` (once: the compiled model is kept in `cache` under `key`, the part's
    /// sha256 from the manifest, so a changed part is compiled again) and load it on `computeUnits`. Compiling
    /// takes seconds: call it off the main thread.
    public static func open(package: URL, graph: String, contract: Contract, computeUnits: ComputeUnits,
                            cache: URL, key: String) async throws -> CoreMLEngine {
        let fm = FileManager.default
        let compiled = cache.appendingPathComponent("\(key).mlmodelc")
        if !fm.fileExists(atPath: compiled.path) {
            let fresh: URL
            do {
                fresh = try await MLModel.compileModel(at: package)
            } catch {
                throw PocketSAMError.engine("CoreML cannot compile the \(graph) \(package.lastPathComponent) "
                    + "(\(error.localizedDescription)); re-export the bundle")
            }
            try fm.createDirectory(at: cache, withIntermediateDirectories: true)
            try? fm.removeItem(at: compiled)
            try fm.moveItem(at: fresh, to: compiled)
        }
        return try CoreMLEngine(compiledModel: compiled, graph: graph, contract: contract, computeUnits: computeUnits)
    }

    public func run(_ feeds: [String: FloatTensor]) throws -> [String: FloatTensor] {
        var features: [String: MLFeatureValue] = [:]
        for name in inputNames {
            guard let t = feeds[name] else { throw PocketSAMError.engine("no feed for the model input \(name)") }
            let shaped = MLShapedArray<Float>(scalars: t.data, shape: t.shape)
            features[name] = MLFeatureValue(multiArray: MLMultiArray(shaped))
        }
        let out: MLFeatureProvider
        do {
            out = try model.prediction(from: try MLDictionaryFeatureProvider(dictionary: features))
        } catch {
            throw PocketSAMError.engine("CoreML prediction failed on \(computeUnits.rawValue) (\(error.localizedDescription))")
        }
        var result: [String: FloatTensor] = [:]
        for name in outputNames {
            guard let array = out.featureValue(for: name)?.multiArrayValue else {
                throw PocketSAMError.engine("the model returned no array \(name)")
            }
            let shaped = MLShapedArray<Float>(converting: array)
            result[name] = try FloatTensor(shape: shaped.shape, data: shaped.scalars)
        }
        return result
    }
}
#endif
