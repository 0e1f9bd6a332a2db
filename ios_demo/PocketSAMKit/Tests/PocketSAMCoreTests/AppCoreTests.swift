import Foundation
import PocketSAMCore
import XCTest

/// What the app's screens rely on, tested here: the click history, the mask PNG and overlay, the JSON reader and
/// writer, and turning the pixels a CGContext draws into the core's image.
final class AppCoreTests: XCTestCase {
    let contract = Golden.contract

    func testInteractionBuildsPromptsAndUndoes() throws {
        var i = Interaction(contract: contract)
        XCTAssertNil(i.prompt())
        XCTAssertFalse(i.canUndo)
        i.include(x: 10, y: 20)
        i.exclude(x: 5, y: 6)
        i.setBox(x0: 30, y0: 40, x1: 3, y1: 4)  // dragged up and left: put in order
        let fg = contract.labels.foreground, bg = contract.labels.background
        XCTAssertEqual(i.prompt(), try Prompt(points: [10, 20, 5, 6], labels: [fg, bg], box: [3, 4, 30, 40]))
        i.setBox(x0: 1, y0: 1, x1: 2, y1: 2)  // a new drag replaces the box
        XCTAssertEqual(i.box, Interaction.Box(x0: 1, y0: 1, x1: 2, y1: 2))
        i.chosenMask = 2
        XCTAssertTrue(i.undo())
        XCTAssertNil(i.chosenMask, "a change starts from the best mask again")
        XCTAssertEqual(i.box, Interaction.Box(x0: 30, y0: 40, x1: 3, y1: 4))
        i.clear()
        XCTAssertTrue(i.isEmpty)
        XCTAssertTrue(i.undo(), "clear is undoable")
        XCTAssertEqual(i.points.count, 2)
        XCTAssertTrue(i.undo())
        XCTAssertTrue(i.undo())
        XCTAssertTrue(i.undo())
        XCTAssertTrue(i.isEmpty)
        XCTAssertFalse(i.undo())
        i.include(x: 1, y: 1)
        i.reset()
        XCTAssertTrue(i.isEmpty)
        XCTAssertFalse(i.canUndo)
        // the shown mask: the chosen one while valid, else the best predicted IoU
        let p = Prediction(count: 3, size: Size(h: 1, w: 1), masks: [true, false, true], scores: [0.5, 0.9, 0.7],
                           lowResLogits: [], lowResSize: 0)
        XCTAssertEqual(i.shownMask(p), 1)
        i.chosenMask = 0
        XCTAssertEqual(i.shownMask(p), 0)
        i.chosenMask = 5
        XCTAssertEqual(i.shownMask(p), 1)
    }

    func testTouchesAreTapsLongPressesOrDrags() {
        XCTAssertEqual(Touch.classify(distance: 2, seconds: 0.1), .tap)
        XCTAssertEqual(Touch.classify(distance: 2, seconds: 0.8), .longPress)
        XCTAssertEqual(Touch.classify(distance: 9.9, seconds: 0.5), .longPress)
        XCTAssertEqual(Touch.classify(distance: 40, seconds: 0.1), .drag)
        XCTAssertEqual(Touch.classify(distance: 40, seconds: 3), .drag, "a slow drag is still a box")
    }

    func testMaskPngIsAValidGrayscalePng() throws {
        // a 3 x 70000 mask: its rows need two stored deflate blocks (a block holds at most 65535 bytes)
        let size = Size(h: 3, w: 70000)
        let mask = (0..<(size.h * size.w)).map { ($0 % 7) < 3 }
        let png = [UInt8](try MaskImage.png(mask, size: size))
        XCTAssertEqual(Array(png.prefix(8)), [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])
        XCTAssertEqual(String(decoding: png[12..<16], as: UTF8.self), "IHDR")
        XCTAssertEqual(Array(png[16..<26]), [0, 1, 0x11, 0x70, 0, 0, 0, 3, 8, 0])  // 70000 x 3, 8-bit gray
        XCTAssertEqual(String(decoding: png[(png.count - 8)..<(png.count - 4)], as: UTF8.self), "IEND")
        if let out = Golden.out {  // tests/test_ios_demo.py decodes it with PIL and compares
            try Data(png).write(to: out.appendingPathComponent("mask-pattern-3x70000.png"))
        }
        expect(.image(""), "needs 6 values") { _ = try MaskImage.png([true], size: Size(h: 2, w: 3)) }
        let overlay = MaskImage.overlayRGBA([true, false], rgba: (255, 0, 102, 128))
        XCTAssertEqual(overlay, [128, 0, 51, 128, 0, 0, 0, 0])
    }

    func testRgbaPixelsBecomeTheCoresImage() throws {
        // 2 x 3 pixels, rows of 16 bytes (CoreGraphics pads rows): alpha and padding dropped
        var rgba = [UInt8](repeating: 0xee, count: 2 * 16)
        for y in 0..<2 {
            for x in 0..<3 { for c in 0..<4 { rgba[y * 16 + x * 4 + c] = UInt8(10 * y + 3 * x + c) } }
        }
        let img = try RgbImage(rgba: rgba, width: 3, height: 2, bytesPerRow: 16)
        XCTAssertEqual(img.size, Size(h: 2, w: 3))
        XCTAssertEqual(img.data, [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18])
        expect(.image(""), "needs 2 rows of 16 bytes") { _ = try RgbImage(rgba: [1, 2, 3], width: 3, height: 2, bytesPerRow: 16) }
    }

    func testJsonReadsAndWritesAsPythonDoes() throws {
        let text = "{\"a\": 1, \"b\": 1.0, \"c\": [true, null, \"x\\u00e9\\n\"], \"d\": -2.5e-3, \"e\": {}}"
        let v = try JSON.parse(text)
        XCTAssertEqual(v["a"], .int(1))
        XCTAssertEqual(v["b"], .double(1.0), "1.0 is a float, as in Python")
        XCTAssertNil(v["b"]!.intValue)
        XCTAssertEqual(v["c"], .array([.bool(true), .null, .string("xé\n")]))
        XCTAssertEqual(v["d"]!.doubleValue, -0.0025)
        XCTAssertEqual(v.objectItems!.map(\.0), ["a", "b", "c", "d", "e"], "key order kept")
        XCTAssertEqual(try JSON.parse(v.text()), v, "written and read back")
        XCTAssertEqual(JSON.object([("k", .array([.int(1), .double(2)]))]).text(), "{\n \"k\": [\n  1,\n  2.0\n ]\n}")
        XCTAssertEqual(JSON.double(.nan).text(), "null")
        // Python's repr of a float64 comes back bit for bit
        XCTAssertEqual(try JSON.parse("[93.84596718588142]").flatNumbers, [93.84596718588142])
        for bad in ["", "{", "[1,", "{\"a\" 1}", "tru", "[1] x", "NaN"] {
            XCTAssertThrowsError(try JSON.parse(bad), "\(bad) was accepted")
        }
    }
}
