import Foundation
import PocketSAMCore
import PocketSAMCoreML

/// The contract the app was built with: tests/golden/contract.json (written by `pocketsam.runtime.spec`), copied
/// into the app's resources by project.yml. Nothing of it is retyped in the app.
enum AppContract {
    static func load() throws -> Contract {
        guard let url = Bundle.main.url(forResource: "contract", withExtension: "json") else {
            throw PocketSAMError.contract("contract.json is missing from the app: regenerate the project (xcodegen generate)")
        }
        return try Contract.load(url)
    }
}

/// Bundles live in the app's Documents folder (visible in the Files app as "On My iPhone › PocketSAM", and in
/// Finder's file sharing), one folder each, as `pocketsam export --format coreml` wrote them.
enum BundleStore {
    static var documents: URL { FileManager.default.urls(for: .documentDirectory, in: .userDomainMask)[0] }

    /// Compiled models, kept by part sha256 so a bundle compiles once.
    static var compiledCache: URL {
        FileManager.default.urls(for: .cachesDirectory, in: .userDomainMask)[0].appendingPathComponent("compiled-models")
    }

    /// The folders in Documents that hold a bundle manifest, by name.
    static func list(_ contract: Contract) -> [URL] {
        let fm = FileManager.default
        let names = (try? fm.contentsOfDirectory(atPath: documents.path)) ?? []
        return names.sorted().map { documents.appendingPathComponent($0) }
            .filter { fm.fileExists(atPath: $0.appendingPathComponent(contract.bundle.manifest).path) }
    }

    /// Copy a bundle folder the user picked (Files app, iCloud Drive, a USB drive) into Documents; returns the copy.
    static func importFolder(_ picked: URL) throws -> URL {
        let scoped = picked.startAccessingSecurityScopedResource()
        defer { if scoped { picked.stopAccessingSecurityScopedResource() } }
        let fm = FileManager.default
        let target = documents.appendingPathComponent(picked.lastPathComponent)
        if target.standardizedFileURL == picked.standardizedFileURL { return target }
        do {
            if fm.fileExists(atPath: target.path) { try fm.removeItem(at: target) }
            try fm.copyItem(at: picked, to: target)
        } catch {
            throw PocketSAMError.bundle("\(picked.lastPathComponent): cannot be copied into the app (\(error.localizedDescription))")
        }
        return target
    }
}

/// A bundle opened on some compute units: its checked manifest and one CoreML engine per part.
struct OpenedBundle {
    let manifest: BundleManifest
    let encoder: CoreMLEngine
    let decoder: CoreMLEngine
    let computeUnits: ComputeUnits
    /// Seconds to compile (first time only) and load both parts.
    let initSeconds: Double

    /// Check the bundle (`BundleManifest.read`: missing parts, wrong spec version, hashes), then compile and load
    /// both parts on `units`, falling back to the CPU when CoreML refuses them there (the message says so).
    static func open(_ root: URL, contract: Contract, units: ComputeUnits) async throws -> Opened<OpenedBundle> {
        let manifest = try BundleManifest.read(root, contract: contract)
        guard manifest.format == "coreml" else {
            throw PocketSAMError.bundle("\(manifest.name) is a \(manifest.format) bundle; this app runs CoreML bundles "
                + "(pocketsam export --format coreml)")
        }
        return try await openWithFallback(units) { u in
            let t0 = Date()
            let enc = try await CoreMLEngine.open(package: manifest.encoder.url, graph: "encoder", contract: contract,
                                                  computeUnits: u, cache: BundleStore.compiledCache, key: manifest.encoder.sha256)
            let dec = try await CoreMLEngine.open(package: manifest.decoder.url, graph: "decoder", contract: contract,
                                                  computeUnits: u, cache: BundleStore.compiledCache, key: manifest.decoder.sha256)
            return OpenedBundle(manifest: manifest, encoder: enc, decoder: dec, computeUnits: u,
                                initSeconds: Date().timeIntervalSince(t0))
        }
    }
}

/// The one `SegmentSession` of the app, owned by an actor so the encoder and decoder run off the main thread and
/// never two at a time.
actor Segmenter {
    private var session: SegmentSession?

    func use(_ bundle: OpenedBundle, contract: Contract) throws {
        session = try SegmentSession(encoder: bundle.encoder, decoder: bundle.decoder, contract: contract,
                                     decoderPoints: bundle.manifest.decoderPoints)
    }

    func setImage(_ image: RgbImage, stage: @escaping @Sendable (String) -> Void) throws {
        guard let s = session else { throw PocketSAMError.bundle("open a bundle first") }
        try s.setImage(image, stage: stage)
    }

    func predict(_ prompt: Prompt) throws -> Prediction {
        guard let s = session else { throw PocketSAMError.bundle("open a bundle first") }
        return try s.predict(prompt, multimask: true)
    }
}
