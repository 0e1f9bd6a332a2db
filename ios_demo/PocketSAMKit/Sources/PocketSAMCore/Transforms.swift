import Foundation

/// An image size as (h, w): rows, columns.
public struct Size: Equatable, Hashable, Sendable, CustomStringConvertible {
    public let h: Int
    public let w: Int
    public init(h: Int, w: Int) { self.h = h; self.w = w }
    public var description: String { "\(h)x\(w)" }
}

/// An RGB image, HxWx3 unsigned bytes in row-major order (the layout of a numpy uint8 HxWx3 array).
public struct RgbImage: Equatable, Sendable {
    public let h: Int
    public let w: Int
    public let data: [UInt8]

    public init(h: Int, w: Int, data: [UInt8]) throws {
        guard h >= 1, w >= 1, data.count == h * w * 3 else {
            throw PocketSAMError.image("an RGB image of \(h) x \(w) needs \(max(h * w * 3, 0)) bytes, got \(data.count)")
        }
        self.h = h
        self.w = w
        self.data = data
    }

    /// An RGB image from `width` x `height` RGBA pixels (4 bytes each, row-major, `bytesPerRow` apart: what a
    /// CGContext draws). Alpha is dropped, as PIL's `convert("RGB")` does (photos are opaque).
    public init(rgba: [UInt8], width: Int, height: Int, bytesPerRow: Int? = nil) throws {
        let stride = bytesPerRow ?? width * 4
        guard width >= 1, height >= 1, stride >= width * 4, rgba.count >= stride * (height - 1) + width * 4 else {
            throw PocketSAMError.image("an RGBA image of \(height) x \(width) needs \(height) rows of \(stride) bytes, got \(rgba.count) bytes")
        }
        var out = [UInt8](repeating: 0, count: width * height * 3)
        for y in 0..<height {
            for x in 0..<width {
                let s = y * stride + x * 4
                let d = (y * width + x) * 3
                out[d] = rgba[s]
                out[d + 1] = rgba[s + 1]
                out[d + 2] = rgba[s + 2]
            }
        }
        try self.init(h: height, w: width, data: out)
    }

    public var size: Size { Size(h: h, w: w) }

    /// The value at row `y`, column `x`, channel `c`.
    public subscript(y: Int, x: Int, c: Int) -> UInt8 { data[(y * w + x) * 3 + c] }
}

/// The encoder's input: `pixels` float32 1x3xSxS (NCHW, S = `Contract.imageSize`) and the size of the resized
/// image inside it, top-left (`input_size`, the part of the input frame that is not padding).
public struct EncoderInput: Sendable {
    public let pixels: [Float]
    public let inputSize: Size
}

/// segment-anything's pre/post-processing, as `pocketsam.runtime.transforms` implements it in numpy (and the Kotlin
/// core in `Transforms.kt`); the golden files pin all three to upstream (`tests/golden/`).
///
/// Frames: the *original* frame is the user's image, (x, y) pixels from its top-left corner; the *input* frame is
/// that image resized so its longest side is `Contract.imageSize`, padded at the bottom and right to a square.
public enum Transforms {
    /// (newh, neww) of an (h, w) image resized so its longest side is `longSide` (upstream's rounding).
    public static func preprocessShape(_ original: Size, longSide: Int) -> Size {
        let scale = Double(longSide) * 1.0 / Double(max(original.h, original.w))
        return Size(h: Int(Double(original.h) * scale + 0.5), w: Int(Double(original.w) * scale + 0.5))
    }

    /// Map (x, y) points, interleaved x0 y0 x1 y1 ..., from the original frame to the input frame, as float32:
    /// scaled in float64 then rounded once, as upstream (numpy float64, then torch's float32 cast).
    public static func applyCoords(_ xy: [Double], original: Size, longSide: Int) -> [Float] {
        let new = preprocessShape(original, longSide: longSide)
        let sx = Double(new.w) / Double(original.w)
        let sy = Double(new.h) / Double(original.h)
        return xy.indices.map { Float(xy[$0] * ($0 % 2 == 0 ? sx : sy)) }
    }

    /// Map XYXY boxes (4 values each) from the original frame to the input frame, as float32.
    public static func applyBoxes(_ boxes: [Double], original: Size, longSide: Int) -> [Float] {
        applyCoords(boxes, original: original, longSide: longSide)
    }

    /// Refuse an image the encoder cannot take (as `transforms.validate_image`): at least 2x2 pixels, and a short
    /// side that does not shrink to 0 pixels when the long side is resized to `longSide`.
    public static func validate(_ image: RgbImage, longSide: Int) throws {
        if image.h < 2 || image.w < 2 {
            throw PocketSAMError.image("expected an image of at least 2x2 pixels, got \(image.h)x\(image.w)")
        }
        let s = preprocessShape(image.size, longSide: longSide)
        if min(s.h, s.w) < 1 {
            throw PocketSAMError.image("a \(image.h)x\(image.w) image: its short side would shrink to 0 pixels when the "
                + "long side is resized to \(longSide); crop it to a less extreme aspect ratio")
        }
    }

    // MARK: resize: PIL's bilinear (what upstream's ResizeLongestSide runs), bit for bit

    /// PIL's fixed-point precision for 8-bit images: 32 bits - 8 for the value - 2 for overflow.
    static let precisionBits = 32 - 8 - 2

    /// One axis of PIL's resampling: for output i, taps [bounds[2i], bounds[2i] + bounds[2i+1]) with weights kk.
    struct Coefficients {
        let ksize: Int
        let bounds: [Int]
        let kk: [Int]
    }

    private static func bilinearFilter(_ x: Double) -> Double {
        let a = x < 0.0 ? -x : x
        return a < 1.0 ? 1.0 - a : 0.0
    }

    /// PIL's `precompute_coeffs` + `normalize_coeffs_8bpc` for the bilinear filter (support 1, widened by the
    /// scale when downscaling: PIL antialiases), over the box [0, inSize).
    static func coefficients(_ inSize: Int, _ outSize: Int) -> Coefficients {
        let scale = Double(inSize) / Double(outSize)
        let filterScale = scale < 1.0 ? 1.0 : scale
        let support = 1.0 * filterScale
        let ksize = Int(support.rounded(.up)) * 2 + 1
        var pre = [Double](repeating: 0, count: outSize * ksize)
        var bounds = [Int](repeating: 0, count: outSize * 2)
        let ss = 1.0 / filterScale
        for xx in 0..<outSize {
            let center = (Double(xx) + 0.5) * scale
            var xmin = Int(center - support + 0.5)  // C's (int): truncation
            if xmin < 0 { xmin = 0 }
            var xmax = Int(center + support + 0.5)
            if xmax > inSize { xmax = inSize }
            xmax -= xmin
            var ww = 0.0
            for x in 0..<max(xmax, 0) {
                let w = bilinearFilter((Double(x + xmin) - center + 0.5) * ss)
                pre[xx * ksize + x] = w
                ww += w
            }
            if ww != 0.0 { for x in 0..<max(xmax, 0) { pre[xx * ksize + x] /= ww } }
            bounds[xx * 2] = xmin
            bounds[xx * 2 + 1] = xmax
        }
        let one = Double(1 << precisionBits)
        let kk = pre.map { $0 < 0 ? Int(-0.5 + $0 * one) : Int(0.5 + $0 * one) }
        return Coefficients(ksize: ksize, bounds: bounds, kk: kk)
    }

    /// PIL's clip8: the fixed-point sum back to 0..255.
    @inline(__always) private static func clip8(_ ss: Int) -> UInt8 {
        let v = ss >> precisionBits
        return v < 0 ? 0 : v > 255 ? 255 : UInt8(v)
    }

    /// `image` resized to `size` exactly as PIL's `Image.resize((w, h), BILINEAR)` on an RGB image: a horizontal
    /// pass over the rows the vertical pass reads, rounded to 8 bits, then the vertical pass.
    public static func resizeBilinear(_ image: RgbImage, to size: Size) -> RgbImage {
        let needHorizontal = size.w != image.w
        let needVertical = size.h != image.h
        let vert = coefficients(image.h, size.h)
        var src = image.data
        var srcW = image.w
        var vBounds = vert.bounds
        let half = 1 << (precisionBits - 1)
        if needHorizontal {
            let first = vert.bounds[0]
            let last = vert.bounds[size.h * 2 - 2] + vert.bounds[size.h * 2 - 1]
            for i in 0..<size.h { vBounds[i * 2] -= first }
            let hor = coefficients(image.w, size.w)
            let rows = last - first
            var out = [UInt8](repeating: 0, count: rows * size.w * 3)
            let inW = image.w
            image.data.withUnsafeBufferPointer { inp in
                hor.kk.withUnsafeBufferPointer { kk in
                    out.withUnsafeMutableBufferPointer { o in
                        for yy in 0..<rows {
                            let rowBase = (yy + first) * inW * 3
                            for xx in 0..<size.w {
                                let xmin = hor.bounds[xx * 2]
                                let xmax = hor.bounds[xx * 2 + 1]
                                let k0 = xx * hor.ksize
                                for c in 0..<3 {
                                    var ss = half
                                    for x in 0..<xmax { ss += Int(inp[rowBase + (x + xmin) * 3 + c]) * kk[k0 + x] }
                                    o[(yy * size.w + xx) * 3 + c] = clip8(ss)
                                }
                            }
                        }
                    }
                }
            }
            src = out
            srcW = size.w
        }
        if !needVertical {
            return try! RgbImage(h: image.h, w: srcW, data: src)  // sizes checked above
        }
        var out = [UInt8](repeating: 0, count: size.h * srcW * 3)
        src.withUnsafeBufferPointer { inp in
            vert.kk.withUnsafeBufferPointer { kk in
                out.withUnsafeMutableBufferPointer { o in
                    for yy in 0..<size.h {
                        let ymin = vBounds[yy * 2]
                        let ymax = vBounds[yy * 2 + 1]
                        let k0 = yy * vert.ksize
                        for i in 0..<(srcW * 3) {  // (x, c) pairs of the row, contiguous
                            var ss = half
                            for y in 0..<ymax { ss += Int(inp[(y + ymin) * srcW * 3 + i]) * kk[k0 + y] }
                            o[yy * srcW * 3 + i] = clip8(ss)
                        }
                    }
                }
            }
        }
        return try! RgbImage(h: size.h, w: srcW, data: out)
    }

    /// ResizeLongestSide: `image` resized so its longest side is `longSide`.
    public static func resizeLongestSide(_ image: RgbImage, longSide: Int) -> RgbImage {
        resizeBilinear(image, to: preprocessShape(image.size, longSide: longSide))
    }

    /// The encoder's input for `image`: float32 1x3xSxS (S = imageSize), raw 0..255 values of the resized image,
    /// padded bottom/right with the contract's `padValueRaw` (the graph normalizes inside, so padding with the
    /// mean is SAM's zero padding), and the resized size inside it (`input_size`).
    public static func encoderInput(_ image: RgbImage, contract: Contract) -> EncoderInput {
        let s = contract.imageSize
        let resized = resizeLongestSide(image, longSide: s)
        var out = [Float](repeating: 0, count: 3 * s * s)
        out.withUnsafeMutableBufferPointer { o in
            resized.data.withUnsafeBufferPointer { r in
                for c in 0..<3 {
                    let pad = Float(contract.padValueRaw[c])
                    let plane = c * s * s
                    for i in 0..<(s * s) { o[plane + i] = pad }
                    for y in 0..<resized.h {
                        for x in 0..<resized.w { o[plane + y * s + x] = Float(r[(y * resized.w + x) * 3 + c]) }
                    }
                }
            }
        }
        return EncoderInput(pixels: out, inputSize: resized.size)
    }

    // MARK: masks: the decoder's low-res logits back to the original frame

    /// One axis of torch's `F.interpolate(mode="bilinear", align_corners=False)` from `inSize` to `outSize` as
    /// (first tap, weight of it, weight of the next) per output. The source index and weights are float32 with the
    /// index's product rounded once, as torch's CPU kernel computes them (and the numpy runtime mirrors).
    struct Taps {
        var i0: [Int], i1: [Int], w0: [Double], w1: [Double]
    }

    static func taps(_ inSize: Int, _ outSize: Int) -> Taps {
        let scale = Float(inSize) / Float(outSize)
        var t = Taps(i0: [], i1: [], w0: [], w1: [])
        for o in 0..<outSize {
            var src = Float(Double(scale) * (Double(o) + 0.5) - 0.5)
            if src < 0 { src = 0 }
            let a = Int(src)
            let l1 = src - Float(a)
            t.i0.append(a)
            t.i1.append(min(a + 1, inSize - 1))
            t.w1.append(Double(l1))
            t.w0.append(Double(1 - l1))
        }
        return t
    }

    /// One output position of an axis of `postprocess_masks`: it reads low-res entries `index[j]` with weight
    /// `weight[j]` (at most 4, in increasing index order).
    struct SparseRow: Sendable {
        let index: [Int]
        let weight: [Double]
    }

    /// One axis of `postprocess_masks` (low-res -> upsampled to `padded`, cropped to `valid`, resized to
    /// `outSize`), one sparse row per output position.
    static func axis(lowRes: Int, padded: Int, valid: Int, outSize: Int) -> [SparseRow] {
        let up = taps(lowRes, padded)
        let down = taps(valid, outSize)
        return (0..<outSize).map { o in
            // The two upsampled taps each output reads, each made of two low-res taps: up to 4 entries, merged
            // per index in this order (the order the weights are summed in), then sorted by index.
            var index: [Int] = []
            var weight: [Double] = []
            func add(_ i: Int, _ w: Double) {
                if let j = index.firstIndex(of: i) { weight[j] += w } else { index.append(i); weight.append(w) }
            }
            let (a, b) = (down.i0[o], down.i1[o])
            add(up.i0[a], down.w0[o] * up.w0[a])
            add(up.i1[a], down.w0[o] * up.w1[a])
            add(up.i0[b], down.w1[o] * up.w0[b])
            add(up.i1[b], down.w1[o] * up.w1[b])
            let order = index.indices.sorted { index[$0] < index[$1] }
            return SparseRow(index: order.map { index[$0] }, weight: order.map { weight[$0] })
        }
    }

    /// segment-anything's `postprocess_masks`: low-res logits C x L x L (input frame, L = lowResMaskSize) ->
    /// C x H x W logits in the original frame: bilinear to imageSize², crop to `inputSize`, bilinear to `original`.
    /// One-off form of `MaskPostprocessor`, which a session keeps per image (its taps depend only on the sizes).
    public static func postprocessMasks(_ lowRes: [Float], count: Int, inputSize: Size, original: Size,
                                        contract: Contract) throws -> [Float] {
        try MaskPostprocessor(inputSize: inputSize, original: original, contract: contract)
            .toOriginalFrame(lowRes, count: count)
    }

    /// Binary masks: logits > the contract's mask threshold.
    public static func threshold(_ logits: [Float], contract: Contract) -> [Bool] {
        let t = Float(contract.maskThreshold)
        return logits.map { $0 > t }
    }
}

/// `Transforms.postprocessMasks` for one image size: the sparse interpolation taps of both axes are computed once
/// (at set-image time), each click then costs at most 4 multiply-adds per output value per axis.
public struct MaskPostprocessor: Sendable {
    public let inputSize: Size
    public let original: Size
    private let l: Int
    private let rows: [Transforms.SparseRow]
    private let cols: [Transforms.SparseRow]

    public init(inputSize: Size, original: Size, contract: Contract) {
        self.inputSize = inputSize
        self.original = original
        l = contract.lowResMaskSize
        rows = Transforms.axis(lowRes: l, padded: contract.imageSize, valid: inputSize.h, outSize: original.h)
        cols = Transforms.axis(lowRes: l, padded: contract.imageSize, valid: inputSize.w, outSize: original.w)
    }

    /// C x L x L low-res logits (input frame) -> C x H x W logits in the original frame (rows first, then columns).
    public func toOriginalFrame(_ lowRes: [Float], count: Int) throws -> [Float] {
        guard lowRes.count == count * l * l else {
            throw PocketSAMError.engine("postprocessMasks: expected \(count) x \(l) x \(l) logits, got \(lowRes.count) values")
        }
        let (h, w, l) = (original.h, original.w, self.l)
        var out = [Float](repeating: 0, count: count * h * w)
        var tmp = [Double](repeating: 0, count: h * l)
        lowRes.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBufferPointer { dst in
                tmp.withUnsafeMutableBufferPointer { t in
                    for m in 0..<count {
                        let base = m * l * l
                        for y in 0..<h {
                            let r = rows[y]
                            for x in 0..<l {
                                var s = 0.0
                                for j in 0..<r.index.count { s += r.weight[j] * Double(src[base + r.index[j] * l + x]) }
                                t[y * l + x] = s
                            }
                        }
                        for x in 0..<w {
                            let c = cols[x]
                            for y in 0..<h {
                                var s = 0.0
                                for j in 0..<c.index.count { s += c.weight[j] * t[y * l + c.index[j]] }
                                dst[(m * h + y) * w + x] = Float(s)
                            }
                        }
                    }
                }
            }
        }
        return out
    }
}
