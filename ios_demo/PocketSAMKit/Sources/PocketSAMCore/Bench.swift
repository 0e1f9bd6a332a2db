import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Timing statistics of one case in milliseconds, computed as `pocketsam.benchmarks.harness` computes them:
/// numpy's median, its linearly interpolated 90th percentile, min, max and mean.
public struct TimingStats: Equatable, Sendable {
    public let runs: Int
    public let medianMs: Double
    public let p90Ms: Double
    public let minMs: Double
    public let maxMs: Double
    public let meanMs: Double

    public static func of(_ ms: [Double]) -> TimingStats {
        precondition(!ms.isEmpty, "no timings")
        let sorted = ms.sorted()
        return TimingStats(runs: ms.count, medianMs: median(sorted), p90Ms: percentile(sorted, 90), minMs: sorted[0],
                           maxMs: sorted[sorted.count - 1], meanMs: ms.reduce(0, +) / Double(ms.count))
    }

    /// numpy.median of sorted `a`: the middle value, or the mean of the two middle values.
    public static func median(_ sorted: [Double]) -> Double {
        let n = sorted.count
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    }

    /// numpy.percentile(a, q) of sorted `a` (method "linear": between the two nearest ranks).
    public static func percentile(_ sorted: [Double], _ q: Double) -> Double {
        let rank = q / 100.0 * Double(sorted.count - 1)
        let lo = Int(rank.rounded(.down))
        let hi = min(lo + 1, sorted.count - 1)
        let t = rank - Double(lo)
        // numpy's lerp: from the lower end below t = 0.5, from the upper end from there on
        return t < 0.5 ? sorted[lo] + (sorted[hi] - sorted[lo]) * t : sorted[hi] - (sorted[hi] - sorted[lo]) * (1 - t)
    }

    /// The row's `stats` object (`pocketsam.benchmarks.schema`).
    public var json: JSON {
        .object([("runs", .int(runs)), ("median_ms", .double(medianMs)), ("p90_ms", .double(p90Ms)),
                 ("min_ms", .double(minMs)), ("max_ms", .double(maxMs)), ("mean_ms", .double(meanMs))])
    }
}

/// Where rows were measured: the app fills it from `UIDevice` / `ProcessInfo` and `uname`; the names are the
/// bench schema's.
public struct DeviceInfo: Sendable {
    /// The device, e.g. "iPhone15,2" (the hardware model from `uname`) or a name the user gave.
    public let device: String
    /// The chip, e.g. "A16 Bionic", or nil where the app cannot tell.
    public let cpu: String?
    public let cores: Int?
    /// E.g. ["arm64"].
    public let isa: [String]?
    /// E.g. "iOS 17.4".
    public let os: String?
    /// `uname -m`, e.g. "arm64".
    public let machine: String?

    public init(device: String, cpu: String? = nil, cores: Int? = nil, isa: [String]? = nil, os: String? = nil,
                machine: String? = nil) {
        self.device = device
        self.cpu = cpu
        self.cores = cores
        self.isa = isa
        self.os = os
        self.machine = machine
    }

    /// What this process can tell about its machine: the hardware model and processor from `uname`, the active
    /// core count and the OS version from `ProcessInfo`.
    public static func current() -> DeviceInfo {
        var u = utsname()
        uname(&u)
        func field<T>(_ value: T) -> String {
            withUnsafeBytes(of: value) { raw in String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self) }
        }
        let machine = field(u.machine)
        let info = ProcessInfo.processInfo
        #if os(iOS)
        let osName = "iOS"
        #elseif os(macOS)
        let osName = "macOS"
        #else
        let osName = field(u.sysname)
        #endif
        let v = info.operatingSystemVersion
        return DeviceInfo(device: machine, cpu: nil, cores: info.activeProcessorCount, isa: [machine],
                          os: "\(osName) \(v.majorVersion).\(v.minorVersion).\(v.patchVersion)", machine: machine)
    }
}

/// CoreML's compute units, named as pocketsam's `coreml` backend and `apple` bench target name them (these names
/// reach the bench rows' `delegate`). `PocketSAMCoreML` maps them to `MLComputeUnits`.
public enum ComputeUnits: String, CaseIterable, Identifiable, Sendable {
    case all = "ALL"
    case cpuAndNeuralEngine = "CPU_AND_NE"
    case cpuAndGPU = "CPU_AND_GPU"
    case cpuOnly = "CPU_ONLY"

    public var id: String { rawValue }

    /// For a picker.
    public var label: String {
        switch self {
        case .all: return "All (Neural Engine, GPU, CPU)"
        case .cpuAndNeuralEngine: return "CPU + Neural Engine"
        case .cpuAndGPU: return "CPU + GPU"
        case .cpuOnly: return "CPU only"
        }
    }
}

/// One contender of a benchmark: a bundle opened by one engine with one set of compute units.
public struct Contender {
    public let manifest: BundleManifest
    /// "coreml" (the engine name of pocketsam's apple rows).
    public let engine: String
    public let engineVersion: String?
    /// The compute units ("ALL", "CPU_AND_NE", ...), the rows' `delegate`.
    public let computeUnits: ComputeUnits
    /// Seconds it took to open (load and compile) both graphs.
    public let initSeconds: Double?
    public let encoder: Engine
    public let decoder: Engine

    public init(manifest: BundleManifest, engine: String, engineVersion: String?, computeUnits: ComputeUnits,
                initSeconds: Double?, encoder: Engine, decoder: Engine) {
        self.manifest = manifest
        self.engine = engine
        self.engineVersion = engineVersion
        self.computeUnits = computeUnits
        self.initSeconds = initSeconds
        self.encoder = encoder
        self.decoder = decoder
    }

    /// The row name the `apple` bench target gives a (bundle, compute unit) contender: `<bundle>@<unit>`.
    public var name: String { "\(manifest.name)@\(computeUnits.rawValue)" }
}

/// One result row in pocketsam's bench row schema (`pocketsam.benchmarks.schema`), target "apple".
public struct BenchRow {
    public let contender: Contender
    public let part: String
    public let stats: TimingStats
    public let device: DeviceInfo
    public let time: Date
    public let note: String?

    /// The schema version of `pocketsam.benchmarks.schema` these rows follow (a pytest feeds rows written by this
    /// code to `pocketsam bench-merge`, which validates every row, so a change there fails here).
    public static let schemaVersion = 1
    /// The parts a benchmark times, in the schema's order: one encoder run; one decoder run on a click's feeds; a
    /// click (decoder + post-processing); an image's first click (encoder + decoder + both).
    public static let parts = ["encoder", "decoder", "prompt", "e2e"]

    private static func optional(_ s: String?) -> JSON { s.map { .string($0) } ?? .null }
    private static func optional(_ i: Int?) -> JSON { i.map { .int($0) } ?? .null }
    private static func optional(_ d: Double?) -> JSON { d.map { .double($0) } ?? .null }

    /// The row as `pocketsam bench-merge` reads it (every field of the schema, null where not measured).
    public var json: JSON {
        let m = contender.manifest
        let precision: String
        let modelBytes: Int?
        switch part {
        case "encoder": (precision, modelBytes) = (m.encoder.precision, m.encoder.sizeBytes)
        case "decoder": (precision, modelBytes) = (m.decoder.precision, m.decoder.sizeBytes)
        default: (precision, modelBytes) = ("\(m.encoder.precision)/\(m.decoder.precision)", nil)
        }
        let engines: JSON = contender.engineVersion.map { .object([(contender.engine, .string($0))]) } ?? .null
        return .object([
            ("schema", .int(BenchRow.schemaVersion)),
            ("target", .string("apple")),
            ("name", .string(contender.name)),
            ("engine", .string(contender.engine)),
            ("engine_version", BenchRow.optional(contender.engineVersion)),
            ("delegate", .string(contender.computeUnits.rawValue)),
            ("part", .string(part)),
            ("precision", .string(precision)),
            ("threads", .null),  // Core ML schedules its own threads
            ("format", .string(m.format)),
            ("stats", stats.json),
            ("init_s", BenchRow.optional(contender.initSeconds)),
            ("memory", .null),
            ("model_bytes", BenchRow.optional(modelBytes)),
            ("is_reference", .bool(false)),
            ("reference", .null),
            ("speedup", .null),
            ("parity", .null),
            ("device", .string(device.device)),
            ("cpu", BenchRow.optional(device.cpu)),
            ("cores", BenchRow.optional(device.cores)),
            ("isa", device.isa.map { .array($0.map { .string($0) }) } ?? .null),
            ("os", BenchRow.optional(device.os)),
            ("machine", BenchRow.optional(device.machine)),
            ("python", .null),
            ("engines", engines),
            ("git", .null),
            ("time", .string(BenchRow.iso8601(time))),
            ("load", .null),
            ("note", BenchRow.optional(note)),
        ])
    }

    /// A results file: `{"schema": 1, "rows": [...]}`.
    public static func document(_ rows: [BenchRow]) -> String {
        JSON.object([("schema", .int(schemaVersion)), ("rows", .array(rows.map(\.json)))]).text() + "\n"
    }

    static func iso8601(_ time: Date) -> String {
        let f = DateFormatter()
        f.locale = Locale(identifier: "en_US_POSIX")
        f.timeZone = TimeZone(identifier: "UTC")
        f.dateFormat = "yyyy-MM-dd'T'HH:mm:ss'+00:00'"
        return f.string(from: time)
    }
}

/// Interleaved timing of contenders, as `pocketsam bench` does on a computer: after `warmup` rounds, `runs` rounds
/// each time every part of every contender once (A B C A B C …), so every contender sees the same device state
/// (thermal throttling included); each timed call follows a `settleMs` pause that lets the previous engine's work
/// finish. Medians are what to read.
///
/// The cases, per contender (as `pocketsam.benchmarks.local`): "encoder" runs the encoder on the image's input;
/// "decoder" runs the decoder on the feeds of a real click (an image's second click: a decoder with the image cache
/// reads it); "prompt" is such a click through `SegmentSession.predict` (decoder + post-processing); "e2e" sets the
/// image on a session of its own and clicks once.
public struct Benchmark {
    public let contract: Contract
    public let image: RgbImage
    public let runs: Int
    public let warmup: Int
    public let settleMs: Int
    public let parts: [String]
    /// Nanoseconds (tests pass a fake clock).
    private let clock: () -> UInt64

    public init(contract: Contract, image: RgbImage, runs: Int, warmup: Int = 1, settleMs: Int = 200,
                parts: [String] = BenchRow.parts, clock: @escaping () -> UInt64 = { DispatchTime.now().uptimeNanoseconds }) throws {
        guard runs >= 1, warmup >= 0 else { throw PocketSAMError.engine("runs must be >= 1 and warmup >= 0") }
        guard !parts.isEmpty, parts.allSatisfy(BenchRow.parts.contains) else {
            throw PocketSAMError.engine("parts must be among \(BenchRow.parts)")
        }
        self.contract = contract
        self.image = image
        self.runs = runs
        self.warmup = warmup
        self.settleMs = settleMs
        self.parts = parts
        self.clock = clock
    }

    /// The click every prompt case makes: the image's centre, a foreground point.
    public func click() -> Prompt {
        try! Prompt(points: [Double(image.w) * 0.5, Double(image.h) * 0.5], labels: [contract.labels.foreground])
    }

    private func cases(_ c: Contender) throws -> [String: () throws -> Void] {
        let recorder = RecordingEngine(c.decoder)
        let points = c.manifest.decoderPoints
        let session = try SegmentSession(encoder: c.encoder, decoder: recorder, contract: contract, decoderPoints: points)
        try session.setImage(image)
        let click = click()
        _ = try session.predict(click)
        _ = try session.predict(click)  // the second click: with the image cache, the one that reads it
        let feeds = recorder.lastFeeds!
        let s = contract.imageSize
        let encoderFeeds = [try contract.inputsOf("encoder")[0]:
                                try FloatTensor(shape: [1, 3, s, s], data: Transforms.encoderInput(image, contract: contract).pixels)]
        // e2e must not drop `session`'s image cache: it gets a session of its own
        let fresh = try SegmentSession(encoder: c.encoder, decoder: c.decoder, contract: contract, decoderPoints: points)
        let all: [String: () throws -> Void] = [
            "encoder": { _ = try c.encoder.run(encoderFeeds) },
            "decoder": { _ = try c.decoder.run(feeds) },
            "prompt": { _ = try session.predict(click) },
            "e2e": { try fresh.setImage(self.image); _ = try fresh.predict(click) },
        ]
        return all.filter { parts.contains($0.key) }
    }

    /// Time every part of every contender; one row per (contender, part), contenders in order, parts in the
    /// schema's order. `progress(done, total)` is called after each timed call (warm-up included); return false
    /// from it to stop (the rows then cover what was measured, or none if the warm-up did not finish).
    public func run(_ contenders: [Contender], device: DeviceInfo,
                    progress: (Int, Int) -> Bool = { _, _ in true }) throws -> [BenchRow] {
        let cases = try contenders.map { try self.cases($0) }
        var times = [[String: [Double]]](repeating: [:], count: contenders.count)
        let total = (warmup + runs) * contenders.count * parts.count
        var done = 0
        var measured = 0
        rounds: for round in 0..<(warmup + runs) {
            for (i, c) in cases.enumerated() {
                for part in parts {
                    if settleMs > 0 { Thread.sleep(forTimeInterval: Double(settleMs) / 1000) }
                    let t0 = clock()
                    try c[part]!()
                    let t1 = clock()
                    if round >= warmup { times[i][part, default: []].append(Double(t1 - t0) / 1e6) }
                    done += 1
                    if !progress(done, total) { break rounds }
                }
            }
            if round >= warmup { measured += 1 }
        }
        guard measured > 0 else { return [] }
        let now = Date()
        let note = "pocketsam ios demo, in-app benchmark: \(warmup) warm-up round(s), \(measured) interleaved runs; "
            + "parity not measured on the device"
        return contenders.indices.flatMap { i in
            BenchRow.parts.filter(parts.contains).map { part in
                // a stopped round's partial timings are dropped: every row has `measured` runs
                BenchRow(contender: contenders[i], part: part, stats: TimingStats.of(Array(times[i][part]!.prefix(measured))),
                         device: device, time: now, note: note)
            }
        }
    }
}
