import Foundation
#if canImport(CryptoKit)
import CryptoKit
#endif

/// SHA-256 (FIPS 180-4), streaming. Foundation on Linux has no hash functions, so the core carries this small one;
/// on Apple platforms `sha256Hex(of:)` uses CryptoKit's (faster on 40 MB model files), and the tests hold this
/// implementation to the standard's test vectors and to Python's hashlib (the goldens' sha256s) on every platform.
public struct Sha256 {
    private static let k: [UInt32] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
        0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
        0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
        0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
        0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
        0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
        0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
    ]
    private var h: [UInt32] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]
    private var buffer: [UInt8] = []
    private var length: UInt64 = 0

    public init() {}

    public mutating func update<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        length &+= UInt64(bytes.count)
        buffer.append(contentsOf: bytes)
        let whole = buffer.count / 64 * 64
        if whole == 0 { return }
        buffer.withUnsafeBufferPointer { p in
            var w = [UInt32](repeating: 0, count: 64)
            for start in stride(from: 0, to: whole, by: 64) { compress(p, start, &w) }
        }
        buffer.removeFirst(whole)
    }

    private mutating func compress(_ p: UnsafeBufferPointer<UInt8>, _ start: Int, _ w: inout [UInt32]) {
        @inline(__always) func rotr(_ x: UInt32, _ n: UInt32) -> UInt32 { (x >> n) | (x << (32 - n)) }
        for i in 0..<16 {
            let j = start + 4 * i
            w[i] = UInt32(p[j]) << 24 | UInt32(p[j + 1]) << 16 | UInt32(p[j + 2]) << 8 | UInt32(p[j + 3])
        }
        for i in 16..<64 {
            let s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3)
            let s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10)
            w[i] = w[i - 16] &+ s0 &+ w[i - 7] &+ s1
        }
        var (a, b, c, d, e, f, g, hh) = (h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7])
        for i in 0..<64 {
            let s1 = rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)
            let ch = (e & f) ^ (~e & g)
            let t1 = hh &+ s1 &+ ch &+ Sha256.k[i] &+ w[i]
            let s0 = rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)
            let maj = (a & b) ^ (a & c) ^ (b & c)
            let t2 = s0 &+ maj
            (hh, g, f, e, d, c, b, a) = (g, f, e, d &+ t1, c, b, a, t1 &+ t2)
        }
        h[0] = h[0] &+ a; h[1] = h[1] &+ b; h[2] = h[2] &+ c; h[3] = h[3] &+ d
        h[4] = h[4] &+ e; h[5] = h[5] &+ f; h[6] = h[6] &+ g; h[7] = h[7] &+ hh
    }

    /// The digest as 64 lowercase hex digits (the hasher is consumed).
    public mutating func hexDigest() -> String {
        let bits = length &* 8
        var tail: [UInt8] = [0x80]
        tail += [UInt8](repeating: 0, count: (119 - buffer.count) % 64)
        tail += (0..<8).map { UInt8(truncatingIfNeeded: bits >> (56 - 8 * UInt64($0))) }
        let saved = length
        update(tail)
        length = saved
        return h.map { String(format: "%08x", $0) }.joined()
    }

    /// The sha256 of `bytes` as hex, with this implementation.
    public static func hex<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        var s = Sha256()
        s.update(bytes)
        return s.hexDigest()
    }
}

/// A streaming sha256 for files: CryptoKit on Apple platforms, `Sha256` elsewhere.
struct FileHasher {
    #if canImport(CryptoKit)
    private var inner = CryptoKit.SHA256()
    mutating func update(_ data: Data) { inner.update(data: data) }
    mutating func hexDigest() -> String { inner.finalize().map { String(format: "%02x", $0) }.joined() }
    #else
    private var inner = Sha256()
    mutating func update(_ data: Data) { inner.update(data) }
    mutating func hexDigest() -> String { inner.hexDigest() }
    #endif

    /// Feed the whole file at `url`, 1 MiB at a time.
    mutating func feed(file url: URL) throws {
        let handle = try FileHandle(forReadingFrom: url)
        defer { try? handle.close() }
        while let chunk = try handle.read(upToCount: 1 << 20), !chunk.isEmpty { update(chunk) }
    }
}
