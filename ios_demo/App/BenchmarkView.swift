import PocketSAMCore
import SwiftUI

/// The benchmark screen: the open bundle timed under each chosen set of compute units (interleaved runs, medians),
/// written as JSON rows in pocketsam's bench row schema (`pocketsam bench-merge` joins them with other devices).
struct BenchmarkView: View {
    @ObservedObject var model: DemoModel
    @State private var runs = 10
    @State private var warmup = 2
    @State private var units: Set<ComputeUnits> = [.all, .cpuAndNeuralEngine, .cpuOnly]
    @State private var progress: Double?
    @State private var stop = StopFlag()
    @State private var rows: [BenchRow] = []
    @State private var saved: URL?
    @State private var message: String?

    var body: some View {
        Form {
            if let message { Note(text: message, color: .red) { self.message = nil } }
            Section("What to time") {
                Text(model.bundle.map { "\($0.manifest.name): encoder \($0.manifest.encoder.precision), decoder \($0.manifest.decoder.precision)" }
                     ?? "Open a CoreML bundle first.")
                Text(model.image == nil ? "Image: a generated 1024 x 768 pattern (no photo is open)"
                     : "Image: the open photo, \(model.image!.w) x \(model.image!.h)")
                    .font(.caption)
                Stepper("Timed runs: \(runs)", value: $runs, in: 1...100)
                Stepper("Warm-up rounds: \(warmup)", value: $warmup, in: 0...10)
                ForEach(ComputeUnits.allCases) { u in
                    Toggle(u.label, isOn: Binding(get: { units.contains(u) },
                                                  set: { on in if on { units.insert(u) } else { units.remove(u) } }))
                }
            }
            Section {
                if let progress {
                    ProgressView(value: progress)
                    Button("Stop", role: .destructive) { stop.set() }
                } else {
                    Button("Run") { start() }.disabled(model.bundle == nil || units.isEmpty || model.contract == nil)
                }
            }
            if !rows.isEmpty {
                Section("Medians (ms)") {
                    ForEach(Array(rows.enumerated()), id: \.offset) { _, r in
                        HStack {
                            Text("\(r.contender.computeUnits.rawValue) · \(r.part)")
                            Spacer()
                            Text(String(format: "%.1f", r.stats.medianMs)).monospacedDigit()
                        }
                    }
                }
                if let saved {
                    Section("Results") {
                        Text(saved.lastPathComponent).font(.caption)
                        ShareLink(item: saved) { Label("Share JSON", systemImage: "square.and.arrow.up") }
                    }
                }
            }
        }
        .navigationTitle("Benchmark")
    }

    private func start() {
        guard let bundle = model.bundle, let contract = model.contract else { return }
        let image = model.image ?? Photos.benchmarkPattern()
        let chosen = ComputeUnits.allCases.filter(units.contains)
        let (runs, warmup) = (self.runs, self.warmup)
        progress = 0
        let stop = StopFlag()
        self.stop = stop
        rows = []
        saved = nil
        Task {
            do {
                // one contender per compute unit, each with its own engines (CoreML fixes the units at load)
                var contenders: [Contender] = []
                for u in chosen {
                    let opened = try await OpenedBundle.open(bundle.manifest.root, contract: contract, units: u)
                    if opened.computeUnits != u {
                        message = (message.map { $0 + "\n" } ?? "") + (opened.message ?? "") + ": \(u.rawValue) skipped"
                        continue
                    }
                    let o = opened.value
                    contenders.append(Contender(manifest: o.manifest, engine: "coreml", engineVersion: osVersion(),
                                                computeUnits: u, initSeconds: o.initSeconds, encoder: o.encoder, decoder: o.decoder))
                }
                let bench = try Benchmark(contract: contract, image: image, runs: runs, warmup: warmup)
                let device = DeviceInfo.current()
                let input = Handoff(value: (bench, contenders))
                let result = try await Task.detached(priority: .userInitiated) {
                    Handoff(value: try input.value.0.run(input.value.1, device: device) { done, total in
                        Task { @MainActor in progress = Double(done) / Double(total) }
                        return !stop.isSet
                    })
                }.value.value
                rows = result
                if !result.isEmpty { saved = try save(result) }
            } catch {
                message = DemoModel.describe(error)
            }
            progress = nil
        }
    }

    /// Core ML ships with the OS: its version is the OS's.
    private func osVersion() -> String {
        let v = ProcessInfo.processInfo.operatingSystemVersion
        return "iOS \(v.majorVersion).\(v.minorVersion).\(v.patchVersion)"
    }

    /// Write the rows to Documents/bench-<time>.json (visible in the Files app).
    private func save(_ rows: [BenchRow]) throws -> URL {
        let f = DateFormatter()
        f.dateFormat = "yyyyMMdd-HHmmss"
        let url = BundleStore.documents.appendingPathComponent("bench-\(f.string(from: Date())).json")
        try Data(BenchRow.document(rows).utf8).write(to: url)
        return url
    }
}

/// The benchmark's stop button, read by the benchmark's worker between timed calls.
final class StopFlag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    var isSet: Bool { lock.lock(); defer { lock.unlock() }; return value }
    func set() { lock.lock(); value = true; lock.unlock() }
}
