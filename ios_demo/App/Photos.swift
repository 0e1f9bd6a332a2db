import CoreGraphics
import Foundation
import ImageIO
import PocketSAMCore
import UIKit

/// A decoded photo: the core's pixels and the image to show (a CGImage is immutable: safe to hand between tasks).
struct DecodedPhoto: @unchecked Sendable {
    let rgb: RgbImage
    let cg: CGImage
}

/// A value handed from a background task to the main actor once the task is done with it (engines and bench rows
/// hold CoreML models, which are not marked Sendable; only one side uses them at a time).
struct Handoff<T>: @unchecked Sendable {
    let value: T
}

/// Photos in and masks out: the bridges between UIKit/CoreGraphics pixels and the core's `RgbImage` and masks.
enum Photos {
    /// The longest side a photo is decoded at. A 48-megapixel photo is ~190 MB as RGBA; the encoder sees 1024
    /// pixels anyway, and masks at 4096 are sharper than the screen. (The Python runtime refuses images over
    /// PIL's ~89 Mpx limit instead; an app scales them.)
    static let maxLongSide = 4096

    /// Decode `data` (JPEG, HEIC, PNG, … from the photo picker) as the viewer shows it: the EXIF orientation
    /// applied (as `pocketsam predict` applies it, so points and masks are in the displayed frame), at most
    /// `maxLongSide` pixels on its longest side. Throws `PocketSAMError.image` when it cannot be decoded.
    static func decode(_ data: Data) throws -> DecodedPhoto {
        guard let source = CGImageSourceCreateWithData(data as CFData, nil), CGImageSourceGetCount(source) > 0 else {
            throw PocketSAMError.image("this photo cannot be decoded (not an image format iOS reads)")
        }
        let props = CGImageSourceCopyPropertiesAtIndex(source, 0, nil) as? [CFString: Any]
        let w = props?[kCGImagePropertyPixelWidth] as? Int ?? 0
        let h = props?[kCGImagePropertyPixelHeight] as? Int ?? 0
        let options: [CFString: Any] = [
            kCGImageSourceCreateThumbnailFromImageAlways: true,
            kCGImageSourceCreateThumbnailWithTransform: true,  // apply the EXIF orientation
            kCGImageSourceThumbnailMaxPixelSize: min(max(w, h, 1), maxLongSide),
            kCGImageSourceShouldCacheImmediately: true,
        ]
        guard let cg = CGImageSourceCreateThumbnailAtIndex(source, 0, options as CFDictionary) else {
            throw PocketSAMError.image("this photo cannot be decoded (its image data is damaged)")
        }
        return DecodedPhoto(rgb: try rgb(cg), cg: cg)
    }

    /// The pixels of `image` as the core's RGB image, alpha dropped. Drawn in the photo's own RGB colour space
    /// (iPhone photos are Display P3), so the values are the file's as PIL reads them (`pocketsam predict` does
    /// no colour management either); other colour models (grayscale, CMYK) are converted to sRGB.
    static func rgb(_ image: CGImage) throws -> RgbImage {
        let w = image.width, h = image.height
        guard w >= 1, h >= 1 else { throw PocketSAMError.image("this photo is empty") }
        let space = image.colorSpace.flatMap { $0.model == .rgb ? $0 : nil } ?? CGColorSpace(name: CGColorSpace.sRGB)!
        var rgba = [UInt8](repeating: 0, count: w * h * 4)
        let drawn = rgba.withUnsafeMutableBytes { buf -> Bool in
            guard let ctx = CGContext(data: buf.baseAddress, width: w, height: h, bitsPerComponent: 8, bytesPerRow: w * 4,
                                      space: space,
                                      bitmapInfo: CGImageAlphaInfo.noneSkipLast.rawValue) else { return false }
            ctx.draw(image, in: CGRect(x: 0, y: 0, width: w, height: h))
            return true
        }
        guard drawn else { throw PocketSAMError.image("this photo cannot be drawn (\(w) x \(h))") }
        return try RgbImage(rgba: rgba, width: w, height: h)
    }

    /// A mask as a translucent overlay image of the photo's size.
    static func overlay(_ mask: [Bool], size: Size, color: (UInt8, UInt8, UInt8, UInt8) = (30, 144, 255, 140)) -> CGImage? {
        let rgba = MaskImage.overlayRGBA(mask, rgba: color)
        guard let provider = CGDataProvider(data: Data(rgba) as CFData) else { return nil }
        return CGImage(width: size.w, height: size.h, bitsPerComponent: 8, bitsPerPixel: 32, bytesPerRow: size.w * 4,
                       space: CGColorSpace(name: CGColorSpace.sRGB)!,
                       bitmapInfo: CGBitmapInfo(rawValue: CGImageAlphaInfo.premultipliedLast.rawValue),
                       provider: provider, decode: nil, shouldInterpolate: false, intent: .defaultIntent)
    }

    /// A picture for the benchmark when no photo is open: a deterministic gradient with a disc, 768 x 1024.
    static func benchmarkPattern() -> RgbImage {
        let h = 768, w = 1024
        var data = [UInt8](repeating: 0, count: h * w * 3)
        for y in 0..<h {
            for x in 0..<w {
                let inside = (x - 512) * (x - 512) + (y - 384) * (y - 384) < 200 * 200
                let i = (y * w + x) * 3
                data[i] = UInt8(x * 255 / w)
                data[i + 1] = inside ? 220 : UInt8(y * 255 / h)
                data[i + 2] = inside ? 40 : 128
            }
        }
        return try! RgbImage(h: h, w: w, data: data)  // the sizes match by construction
    }
}
