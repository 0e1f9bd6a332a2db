import Foundation

/// One prompt in the original frame, turned into the decoder's `point_coords` / `point_labels` exactly as
/// upstream's PromptEncoder sees them (and `pocketsam.runtime.Predictor` builds them): the points, then the box
/// corners (labels boxTopLeft / boxBottomRight); when points come without a box, one (0, 0) point labelled pad.
public struct Prompt: Equatable, Sendable {
    /// Interleaved x, y pixels in the original frame (may be empty).
    public let points: [Double]
    /// One label per point: the contract's foreground or background code.
    public let labels: [Int]
    /// XYXY pixels in the original frame, or nil.
    public let box: [Double]?

    public init(points: [Double] = [], labels: [Int] = [], box: [Double]? = nil) throws {
        guard points.count == labels.count * 2 else {
            throw PocketSAMError.prompt("a prompt has \(points.count / 2) points but \(labels.count) labels")
        }
        if let b = box, b.count != 4 { throw PocketSAMError.prompt("a box is 4 numbers, x0 y0 x1 y1") }
        self.points = points
        self.labels = labels
        self.box = box
    }

    /// Whether the prompt has any token: points or a box (a mask-only prompt has none).
    public var hasTokens: Bool { !labels.isEmpty || box != nil }

    /// The decoder's inputs for this prompt, batch 1: coords (N x 2, input frame, float32) and labels (N).
    /// `decoderPoints`: a fixed-shape decoder's point count (TFLite), padded with pad points; nil: exact.
    public func decoderTokens(original: Size, contract: Contract, decoderPoints: Int? = nil) throws -> DecoderTokens {
        let lab = contract.labels
        for l in labels where l != lab.foreground && l != lab.background {
            throw PocketSAMError.prompt("label \(l) is not a point label (\(lab.foreground) foreground, \(lab.background) background)")
        }
        let user = labels.count + (box != nil ? 2 : 0)
        // upstream appends one pad point when points come without a box
        var pad = !labels.isEmpty && box == nil ? 1 : 0
        if let n = decoderPoints {
            guard user + pad <= n else {
                throw PocketSAMError.prompt("this prompt needs \(user + pad) decoder points but the decoder takes \(n): "
                    + "give fewer points, or re-export with --decoder-points \(user + pad)")
            }
            pad = n - user
        }
        var coords = Transforms.applyCoords(points, original: original, longSide: contract.imageSize)
        var codes = labels.map { Float($0) }
        if let b = box {
            coords += Transforms.applyBoxes(b, original: original, longSide: contract.imageSize)
            codes += [Float(lab.boxTopLeft), Float(lab.boxBottomRight)]
        }
        coords += [Float](repeating: 0, count: pad * 2)  // pad points are (0, 0)
        codes += [Float](repeating: Float(lab.pad), count: pad)
        return DecoderTokens(coords: coords, labels: codes)
    }
}

/// A prompt as the decoder takes it (batch 1): `coords` N x 2 (x, y) in the input frame and `labels` N, float32
/// (label codes as floats: the graph handles them by arithmetic).
public struct DecoderTokens: Equatable, Sendable {
    public let coords: [Float]
    public let labels: [Float]
    public init(coords: [Float], labels: [Float]) { self.coords = coords; self.labels = labels }
    public var count: Int { labels.count }
}
