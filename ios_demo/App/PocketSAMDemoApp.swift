import SwiftUI

/// PocketSAM's iOS demo: MobileSAM bundles (`pocketsam export --format coreml`) run by CoreML, with the
/// pre/post-processing of PocketSAMKit's core (tested on Linux against the golden files, see README.md).
@main
struct PocketSAMDemoApp: App {
    var body: some Scene {
        WindowGroup { ContentView() }
    }
}
