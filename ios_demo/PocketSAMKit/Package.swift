// swift-tools-version:5.9
// PocketSAMKit: pocketsam's pre/post-processing contract in Swift.
//   PocketSAMCore    Foundation only: contract, bundle manifest, transforms, prompt tokens, SegmentSession, bench
//                    rows. Builds and is tested on Linux (ios_demo/run-linux-tests.sh) and on Apple platforms.
//   PocketSAMCoreML  the CoreML engine (`#if canImport(CoreML)`): empty on Linux.
import PackageDescription

let package = Package(
    name: "PocketSAMKit",
    platforms: [.iOS(.v17), .macOS(.v14)],  // the CoreML bundles' deployment target (docs/coreml.md)
    products: [
        .library(name: "PocketSAMCore", targets: ["PocketSAMCore"]),
        .library(name: "PocketSAMCoreML", targets: ["PocketSAMCoreML"]),
    ],
    targets: [
        .target(name: "PocketSAMCore"),
        .target(name: "PocketSAMCoreML", dependencies: ["PocketSAMCore"]),
        .testTarget(name: "PocketSAMCoreTests", dependencies: ["PocketSAMCore", "PocketSAMCoreML"]),
    ]
)
