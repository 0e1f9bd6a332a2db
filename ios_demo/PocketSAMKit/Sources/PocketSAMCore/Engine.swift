import Foundation

/// A float32 tensor: `data` in row-major (C) order and its `shape`. Every graph input and output of pocketsam's
/// spec is float32 (labels included: the graphs handle them by arithmetic).
public struct FloatTensor: Equatable, Sendable, CustomStringConvertible {
    public let shape: [Int]
    public let data: [Float]

    public init(shape: [Int], data: [Float]) throws {
        let n = shape.reduce(1, *)
        guard shape.allSatisfy({ $0 >= 0 }), n == data.count else {
            throw PocketSAMError.engine("a tensor of shape \(shape.map(String.init).joined(separator: "x")) needs \(n) values, got \(data.count)")
        }
        self.shape = shape
        self.data = data
    }

    /// A tensor of `shape` with every value `value`.
    public static func filled(_ shape: [Int], _ value: Float = 0) -> FloatTensor {
        try! FloatTensor(shape: shape, data: [Float](repeating: value, count: shape.reduce(1, *)))
    }

    /// The number of values.
    public var count: Int { data.count }

    public var description: String { "FloatTensor(\(shape.map(String.init).joined(separator: "x")))" }
}

/// One graph of a bundle (the encoder or the decoder) in some engine: CoreML in the app (`PocketSAMCoreML`), a
/// replay of the golden files in the tests. Names are the contract's (`Contract.inputsOf("decoder")` ...): an engine
/// whose model file uses other names maps them itself.
public protocol Engine: AnyObject {
    /// The graph's input names, in the contract's order; a decoder with the image cache lists its inputs too.
    var inputNames: [String] { get }
    var outputNames: [String] { get }

    /// Run the graph once on `feeds` (one tensor per input name) and return every output by name.
    /// Throws `PocketSAMError.engine` when the engine cannot run it.
    func run(_ feeds: [String: FloatTensor]) throws -> [String: FloatTensor]
}

/// An `Engine` that remembers the feeds of its last call (benchmarks time the decoder on a real click's feeds).
public final class RecordingEngine: Engine {
    private let inner: Engine
    public private(set) var lastFeeds: [String: FloatTensor]?

    public init(_ inner: Engine) { self.inner = inner }

    public var inputNames: [String] { inner.inputNames }
    public var outputNames: [String] { inner.outputNames }

    public func run(_ feeds: [String: FloatTensor]) throws -> [String: FloatTensor] {
        lastFeeds = feeds
        return try inner.run(feeds)
    }
}

/// What `openWithFallback` opened: the value, the compute units that took the model, and a message for the user
/// when they are not the ones asked for (nil when they are).
public struct Opened<T> {
    public let value: T
    public let computeUnits: ComputeUnits
    public let message: String?
}

/// The compute units to try, in order, for a request: the requested ones, then the CPU alone (every device has
/// it, and CoreML runs every op there).
public func fallbackOrder(_ requested: ComputeUnits) -> [ComputeUnits] {
    requested == .cpuOnly ? [.cpuOnly] : [requested, .cpuOnly]
}

/// Open something (the two graphs of a bundle) on `requested`, falling back along `fallbackOrder` when CoreML
/// refuses the model there (`PocketSAMError.engine`). The message says which units refused and why, for the
/// screen. Throws the refusals, joined, when no units take the model; other errors (a bad bundle) pass through.
public func openWithFallback<T>(_ requested: ComputeUnits,
                                _ open: (ComputeUnits) async throws -> T) async throws -> Opened<T> {
    var refusals: [String] = []
    for units in fallbackOrder(requested) {
        do {
            let value = try await open(units)
            let message = refusals.isEmpty ? nil : refusals.joined(separator: "; ") + "; running on \(units.rawValue) instead"
            return Opened(value: value, computeUnits: units, message: message)
        } catch let PocketSAMError.engine(why) {
            refusals.append("\(units.rawValue) refused the model (\(why))")
        }
    }
    throw PocketSAMError.engine(refusals.joined(separator: "; "))
}
