import CoreGraphics
import Foundation
import PocketSAMCore
import SwiftUI

/// The state of the segmentation screen. Every failure the user can cause (a bundle with missing parts or another
/// spec version, compute units that refuse the model, a photo that cannot be decoded, a prompt outside the photo)
/// becomes `message`, shown on screen; the app carries on.
@MainActor
final class DemoModel: ObservableObject {
    @Published private(set) var bundles: [URL] = []
    @Published private(set) var bundle: OpenedBundle?
    @Published var computeUnits: ComputeUnits = .all
    @Published private(set) var photo: CGImage?
    @Published private(set) var image: RgbImage?
    @Published private(set) var interaction: Interaction?
    @Published private(set) var prediction: Prediction?
    @Published private(set) var overlay: CGImage?
    /// What runs now ("compiling the model", "encoder", …), nil when idle.
    @Published private(set) var busy: String?
    /// An error for the user, shown until dismissed.
    @Published var message: String?
    /// A notice (the compute units fell back to the CPU), shown until dismissed.
    @Published var notice: String?

    let contract: Contract?
    private let segmenter = Segmenter()
    /// Counts prompt changes: a decoder result that arrives after a newer change is dropped.
    private var generation = 0

    init() {
        do {
            contract = try AppContract.load()
        } catch {
            contract = nil
            message = Self.describe(error)
        }
        refreshBundles()
    }

    static func describe(_ error: Error) -> String {
        (error as? PocketSAMError)?.message ?? error.localizedDescription
    }

    /// Tasks under way (`busy` shows while any is).
    private var running = 0

    /// Run `work`, showing `what` while it runs and its error, if any, as `message`.
    private func run(_ what: String, _ work: @escaping () async throws -> Void) {
        busy = what
        running += 1
        Task {
            do { try await work() } catch { message = Self.describe(error) }
            running -= 1
            if running == 0 { busy = nil }
        }
    }

    func refreshBundles() {
        guard let contract else { return }
        bundles = BundleStore.list(contract)
    }

    /// Copy a picked bundle folder into the app, then open it.
    func importBundle(_ picked: URL) {
        do {
            let copy = try BundleStore.importFolder(picked)
            refreshBundles()
            openBundle(copy)
        } catch {
            message = Self.describe(error)
        }
    }

    /// Check and open the bundle at `root` on the chosen compute units; the current photo is encoded again.
    func openBundle(_ root: URL) {
        guard let contract else { return }
        let units = computeUnits
        run("opening \(root.lastPathComponent) (the first time compiles the model)") { [self] in
            bundle = nil
            let opened = try await OpenedBundle.open(root, contract: contract, units: units)
            try await segmenter.use(opened.value, contract: contract)
            bundle = opened.value
            computeUnits = opened.computeUnits
            notice = opened.message
            if let image { try await encode(image) }
        }
    }

    /// Reopen the current bundle on other compute units.
    func setComputeUnits(_ units: ComputeUnits) {
        computeUnits = units
        if let root = bundle?.manifest.root { openBundle(root) }
    }

    /// A photo from the picker: decode it (EXIF orientation applied) and run the encoder once.
    func loadPhoto(_ data: Data) {
        run("decoding the photo") { [self] in
            let decoded = try await Task.detached(priority: .userInitiated) { try Photos.decode(data) }.value
            let rgb = decoded.rgb
            photo = decoded.cg
            image = rgb
            prediction = nil
            overlay = nil
            interaction = contract.map { Interaction(contract: $0) }
            if bundle != nil { try await encode(rgb) }
        }
    }

    private func encode(_ rgb: RgbImage) async throws {
        generation += 1  // a result for the previous image is not shown
        prediction = nil
        overlay = nil
        busy = "encoding the photo"
        try await segmenter.setImage(rgb) { stage in
            Task { @MainActor in if self.running > 0 { self.busy = "encoding the photo: \(stage)" } }
        }
        interaction?.reset()
    }

    // MARK: prompts (coordinates in the photo's pixels, the original frame)

    func include(x: Double, y: Double) { change { $0.include(x: x, y: y) } }
    func exclude(x: Double, y: Double) { change { $0.exclude(x: x, y: y) } }
    func box(x0: Double, y0: Double, x1: Double, y1: Double) { change { $0.setBox(x0: x0, y0: y0, x1: x1, y1: y1) } }
    func clear() { change { $0.clear() } }
    func undo() { change { $0.undo() } }

    var canUndo: Bool { interaction?.canUndo ?? false }

    /// Choose one of the multimask outputs.
    func choose(_ index: Int) {
        interaction?.chosenMask = index
        showMask()
    }

    var shownMask: Int? { prediction.flatMap { p in interaction?.shownMask(p) } }

    private func change(_ edit: (inout Interaction) -> Void) {
        guard var i = interaction else { message = "pick a photo first"; return }
        guard bundle != nil else { message = "open a bundle first"; return }
        edit(&i)
        interaction = i
        generation += 1
        let mine = generation
        guard let prompt = i.prompt() else {
            prediction = nil
            overlay = nil
            return
        }
        run("decoding the prompt") { [self] in
            let p = try await segmenter.predict(prompt)
            guard mine == generation else { return }  // the user has clicked again meanwhile
            prediction = p
            showMask()
        }
    }

    private func showMask() {
        guard let p = prediction, let i = shownMask else { overlay = nil; return }
        overlay = Photos.overlay(p.mask(i), size: p.size)
    }

    /// The shown mask as a PNG (white on black, the photo's size), or nil.
    func maskPNG() -> Data? {
        guard let p = prediction, let i = shownMask else { return nil }
        do { return try MaskImage.png(p.mask(i), size: p.size) } catch { message = Self.describe(error); return nil }
    }
}
