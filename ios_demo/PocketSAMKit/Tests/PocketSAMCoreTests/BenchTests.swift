import Foundation
import PocketSAMCore
import XCTest

/// A clock the fake engines move: each call "takes" the milliseconds its engine is given.
private final class FakeClock {
    var nanos: UInt64 = 0
    func spend(_ ms: Double) { nanos += UInt64(ms * 1e6) }
}

/// An engine of the contract's I/O that spends `ms(call)` on the fake clock and answers with zeros.
private final class TimedEngine: Engine {
    let graph: String
    let inputNames: [String]
    let outputNames: [String]
    let clock: FakeClock
    let ms: (Int) -> Double
    var calls = 0

    init(_ graph: String, _ clock: FakeClock, _ ms: @escaping (Int) -> Double) {
        self.graph = graph
        inputNames = try! Golden.contract.inputsOf(graph)
        outputNames = try! Golden.contract.outputsOf(graph)
        self.clock = clock
        self.ms = ms
    }

    func run(_ feeds: [String: FloatTensor]) throws -> [String: FloatTensor] {
        clock.spend(ms(calls))
        calls += 1
        let c = Golden.contract
        if graph == "encoder" { return [outputNames[0]: FloatTensor.filled([1])] }
        let b = feeds["point_labels"]!.shape[0]
        return [outputNames[0]: FloatTensor.filled([b, c.numMaskOutputs, c.lowResMaskSize, c.lowResMaskSize]),
                outputNames[1]: FloatTensor.filled([b, c.numMaskOutputs])]
    }
}

/// The in-app benchmark: statistics computed as pocketsam's harness computes them (numpy's median and percentile),
/// interleaved runs over contenders, and rows in pocketsam's bench row schema. The rows are written to
/// POCKETSAM_WORK/out/apple-bench.json, which tests/test_ios_demo.py feeds to `pocketsam bench-merge`.
final class BenchTests: XCTestCase {
    let contract = Golden.contract

    func testStatisticsAreNumpys() {
        // numpy 2: median, percentile(90) and mean of these arrays
        let a = TimingStats.of([12.5, 3.0, 7.25, 100.0, 4.5, 9.0, 3.5])
        XCTAssertEqual(a.runs, 7)
        XCTAssertEqual(a.medianMs, 7.25)
        XCTAssertEqual(a.p90Ms, 47.50000000000003)
        XCTAssertEqual(a.minMs, 3.0)
        XCTAssertEqual(a.maxMs, 100.0)
        XCTAssertEqual(a.meanMs, 19.964285714285715, accuracy: 1e-12)
        let b = TimingStats.of([2.0, 1.0, 4.0, 3.0])
        XCTAssertEqual(b.medianMs, 2.5)
        XCTAssertEqual(b.p90Ms, 3.7)
        XCTAssertEqual(TimingStats.percentile([0.1, 0.2, 0.7], 90), 0.6)
    }

    func testInterleavedRunsGiveSchemaRows() throws {
        let clock = FakeClock()
        let image = try RgbImage(h: 30, w: 40, data: (0..<(30 * 40 * 3)).map { UInt8($0 % 200) })
        let bundle = try BundleManifest.read(try makeBundle("coreml", name: "mobilesam-coreml-fp16"), contract: contract)
        // encoder calls take 100, 110, 120, 100, ... ms; decoder calls 5, 6, 5, 6, ... (set-up calls included)
        let ane = Contender(manifest: bundle, engine: "coreml", engineVersion: "iOS 17.4", computeUnits: .cpuAndNeuralEngine,
                            initSeconds: 1.5, encoder: TimedEngine("encoder", clock) { 100 + 10 * Double($0 % 3) },
                            decoder: TimedEngine("decoder", clock) { 5 + Double($0 % 2) })
        let cpu = Contender(manifest: bundle, engine: "coreml", engineVersion: "iOS 17.4", computeUnits: .cpuOnly,
                            initSeconds: 0.75, encoder: TimedEngine("encoder", clock) { _ in 400 },
                            decoder: TimedEngine("decoder", clock) { _ in 12 })
        let bench = try Benchmark(contract: contract, image: image, runs: 5, warmup: 1, settleMs: 0, clock: { clock.nanos })
        var calls = 0
        let device = DeviceInfo(device: "iPhone15,2", cpu: "A16 Bionic", cores: 6, isa: ["arm64"], os: "iOS 17.4", machine: "arm64")
        let rows = try bench.run([ane, cpu], device: device) { done, total in
            calls += 1
            XCTAssertLessThanOrEqual(done, total)
            return true
        }
        XCTAssertEqual(calls, (1 + 5) * 2 * 4)
        XCTAssertEqual(rows.count, 2 * 4)
        var byKey: [String: BenchRow] = [:]
        for r in rows { byKey["\(r.contender.computeUnits.rawValue)/\(r.part)"] = r }
        for r in rows { XCTAssertEqual(r.stats.runs, 5) }
        XCTAssertEqual(byKey["CPU_ONLY/encoder"]!.stats.medianMs, 400, accuracy: 1e-9)
        XCTAssertEqual(byKey["CPU_ONLY/decoder"]!.stats.medianMs, 12, accuracy: 1e-9)
        XCTAssertEqual(byKey["CPU_ONLY/prompt"]!.stats.medianMs, 12, accuracy: 1e-9)
        XCTAssertEqual(byKey["CPU_ONLY/e2e"]!.stats.medianMs, 412, accuracy: 1e-9)
        let enc = byKey["CPU_AND_NE/encoder"]!.stats  // each call 100, 110 or 120 ms
        XCTAssertTrue(enc.minMs >= 100 && enc.maxMs <= 120)
        let first = rows[0].json
        XCTAssertEqual(first["schema"], .int(1))
        XCTAssertEqual(first["target"], .string("apple"))
        XCTAssertEqual(first["name"], .string("mobilesam-coreml-fp16@CPU_AND_NE"))
        XCTAssertEqual(first["delegate"], .string("CPU_AND_NE"))
        XCTAssertEqual(first["part"], .string("encoder"))
        XCTAssertEqual(first["precision"], .string("fp16"))
        XCTAssertEqual(first["is_reference"], .bool(false))
        XCTAssertEqual(rows.first { $0.part == "e2e" }!.json["precision"], .string("fp16/fp16"))
        let doc = BenchRow.document(rows)
        let parsed = try JSON.parse(doc)
        XCTAssertEqual(parsed["rows"]!.arrayValue!.count, rows.count)
        if let out = Golden.out {
            let file = out.appendingPathComponent("apple-bench.json")
            try Data(doc.utf8).write(to: file)
            print("wrote \(rows.count) bench rows to \(file.path)")
        }
    }

    func testAStoppedBenchmarkKeepsTheWholeRounds() throws {
        let clock = FakeClock()
        let image = try RgbImage(h: 8, w: 8, data: [UInt8](repeating: 9, count: 8 * 8 * 3))
        let bundle = try BundleManifest.read(try makeBundle(), contract: contract)
        let c = Contender(manifest: bundle, engine: "coreml", engineVersion: nil, computeUnits: .all, initSeconds: nil,
                          encoder: TimedEngine("encoder", clock) { _ in 50 }, decoder: TimedEngine("decoder", clock) { _ in 2 })
        let bench = try Benchmark(contract: contract, image: image, runs: 10, warmup: 1, settleMs: 0, parts: ["encoder", "decoder"],
                                  clock: { clock.nanos })
        // stop in the middle of the 4th round: warm-up + 2 whole timed rounds + half of one
        let rows = try bench.run([c], device: DeviceInfo(device: "test")) { done, _ in done < 7 }
        XCTAssertEqual(rows.map(\.part), ["encoder", "decoder"])
        XCTAssertEqual(rows.map(\.stats.runs), [2, 2])
        XCTAssertEqual(rows[0].json["engines"], .null)
        XCTAssertTrue(try bench.run([c], device: DeviceInfo(device: "test")) { _, _ in false }.isEmpty)
        expect(.engine(""), "parts must be among") {
            _ = try Benchmark(contract: self.contract, image: image, runs: 1, parts: ["everything"])
        }
    }

    func testComputeUnitsAreNamedAsPocketsamsAppleTarget() {
        // benchmarks/apple.py's COMPUTE_UNITS (pytest checks this list against it, see tests/test_ios_demo.py)
        XCTAssertEqual(Set(ComputeUnits.allCases.map(\.rawValue)), ["CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE", "ALL"])
        XCTAssertEqual(fallbackOrder(.cpuAndNeuralEngine), [.cpuAndNeuralEngine, .cpuOnly])
        XCTAssertEqual(fallbackOrder(.cpuOnly), [.cpuOnly])
    }

    func testRefusedComputeUnitsFallBackToTheCPUWithAMessage() async throws {
        let opened = try await openWithFallback(.cpuAndNeuralEngine) { units -> String in
            if units == .cpuAndNeuralEngine { throw PocketSAMError.engine("ANE compiler error") }
            return "model on \(units.rawValue)"
        }
        XCTAssertEqual(opened.value, "model on CPU_ONLY")
        XCTAssertEqual(opened.computeUnits, .cpuOnly)
        XCTAssertEqual(opened.message, "CPU_AND_NE refused the model (ANE compiler error); running on CPU_ONLY instead")
        let direct = try await openWithFallback(.all) { units in units.rawValue }
        XCTAssertNil(direct.message)
        do {
            _ = try await openWithFallback(.all) { _ -> String in throw PocketSAMError.engine("no") }
            XCTFail("expected a refusal")
        } catch let e as PocketSAMError {
            XCTAssertEqual(e.message, "ALL refused the model (no); CPU_ONLY refused the model (no)")
        }
        // a bad bundle is not a refusal: it passes through at once
        var tries = 0
        do {
            _ = try await openWithFallback(.all) { _ -> String in tries += 1; throw PocketSAMError.bundle("missing parts") }
            XCTFail("expected the bundle error")
        } catch let e as PocketSAMError {
            XCTAssertEqual(e, .bundle("missing parts"))
            XCTAssertEqual(tries, 1)
        }
    }
}
