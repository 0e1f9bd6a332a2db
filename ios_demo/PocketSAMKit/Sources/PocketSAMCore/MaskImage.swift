import Foundation

/// Masks as pictures: the PNG the app saves and the overlay it draws. Written here, without UIKit, so the PNG
/// bytes are tested on Linux (the pytest wrapper decodes a Swift-written PNG with PIL and compares it with the
/// mask).
public enum MaskImage {
    /// A mask (H x W, row-major) as an 8-bit grayscale PNG, 255 where the mask is and 0 elsewhere: the file
    /// `pocketsam predict --out` writes (`runtime.image.save_mask_png`). The image data is zlib-compressed with
    /// stored (uncompressed) deflate blocks: valid for every PNG reader, and a mask PNG is 1 byte per pixel.
    public static func png(_ mask: [Bool], size: Size) throws -> Data {
        guard size.h >= 1, size.w >= 1, mask.count == size.h * size.w else {
            throw PocketSAMError.image("a \(size.h) x \(size.w) mask needs \(size.h * size.w) values, got \(mask.count)")
        }
        var raw = [UInt8](repeating: 0, count: size.h * (size.w + 1))  // each row: filter byte 0 (none), pixels
        for y in 0..<size.h {
            for x in 0..<size.w where mask[y * size.w + x] { raw[y * (size.w + 1) + 1 + x] = 255 }
        }
        var out: [UInt8] = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]
        // IHDR: width, height, bit depth 8, colour type 0 (grayscale), compression 0, filter 0, no interlace
        chunk(&out, "IHDR", bigEndian(UInt32(size.w)) + bigEndian(UInt32(size.h)) + [8, 0, 0, 0, 0])
        chunk(&out, "IDAT", zlibStored(raw))
        chunk(&out, "IEND", [])
        return Data(out)
    }

    /// A mask as RGBA pixels (H x W x 4, row-major, premultiplied alpha as CoreGraphics draws it): `rgba`'s colour
    /// at its alpha where the mask is, transparent elsewhere.
    public static func overlayRGBA(_ mask: [Bool], rgba: (UInt8, UInt8, UInt8, UInt8)) -> [UInt8] {
        let a = UInt16(rgba.3)
        let px: [UInt8] = [UInt8(UInt16(rgba.0) * a / 255), UInt8(UInt16(rgba.1) * a / 255),
                           UInt8(UInt16(rgba.2) * a / 255), rgba.3]
        var out = [UInt8](repeating: 0, count: mask.count * 4)
        for (i, m) in mask.enumerated() where m {
            out[4 * i] = px[0]; out[4 * i + 1] = px[1]; out[4 * i + 2] = px[2]; out[4 * i + 3] = px[3]
        }
        return out
    }

    private static func bigEndian(_ v: UInt32) -> [UInt8] {
        [UInt8(v >> 24), UInt8((v >> 16) & 0xff), UInt8((v >> 8) & 0xff), UInt8(v & 0xff)]
    }

    private static func chunk(_ out: inout [UInt8], _ type: String, _ data: [UInt8]) {
        let typed = Array(type.utf8) + data
        out += bigEndian(UInt32(data.count)) + typed + bigEndian(crc32(typed))
    }

    private static let crcTable: [UInt32] = (0..<256).map { n -> UInt32 in
        var c = UInt32(n)
        for _ in 0..<8 { c = c & 1 != 0 ? 0xedb88320 ^ (c >> 1) : c >> 1 }
        return c
    }

    /// CRC-32 (ISO 3309, as PNG chunks use it).
    static func crc32(_ bytes: [UInt8]) -> UInt32 {
        var c: UInt32 = 0xffffffff
        for b in bytes { c = crcTable[Int((c ^ UInt32(b)) & 0xff)] ^ (c >> 8) }
        return c ^ 0xffffffff
    }

    /// A zlib stream (RFC 1950) of stored deflate blocks (RFC 1951, BTYPE 00) holding `data`, with its Adler-32.
    static func zlibStored(_ data: [UInt8]) -> [UInt8] {
        var out: [UInt8] = [0x78, 0x01]  // deflate, 32K window, no dictionary, fastest; (0x78 << 8 | 0x01) % 31 == 0
        var start = 0
        repeat {
            let n = min(65535, data.count - start)
            let last: UInt8 = start + n == data.count ? 1 : 0
            out += [last, UInt8(n & 0xff), UInt8(n >> 8), UInt8(~n & 0xff), UInt8((~n >> 8) & 0xff)]
            out += data[start..<(start + n)]
            start += n
        } while start < data.count
        var a: UInt32 = 1, b: UInt32 = 0
        for byte in data {
            a = (a + UInt32(byte)) % 65521
            b = (b + a) % 65521
        }
        return out + bigEndian(b << 16 | a)
    }
}
