import Foundation

/// A mistake the user can fix (a bundle, a photo, a prompt, an engine that refuses the model): the app shows its
/// message and carries on. Anything else thrown by the core is a bug. Cases parallel the Kotlin core's exceptions
/// (BundleException, PromptException, ImageNotSetException, EngineException).
public enum PocketSAMError: Error, Equatable, Sendable, CustomStringConvertible, LocalizedError {
    /// A bundle folder that cannot be used: missing parts, wrong spec version, bad manifest, hashes that differ.
    case bundle(String)
    /// A prompt the decoder cannot take (a point outside the image, too many points for a fixed-shape decoder).
    case prompt(String)
    /// A prediction before `SegmentSession.setImage`.
    case imageNotSet(String)
    /// An engine that cannot open or run a graph (compute units that refuse the model, a model CoreML can't load).
    case engine(String)
    /// An image that cannot be used (cannot be decoded, too small, wrong pixel layout).
    case image(String)
    /// A contract.json that lacks a value or holds one of the wrong type.
    case contract(String)

    /// The one-line message for the screen.
    public var message: String {
        switch self {
        case let .bundle(m), let .prompt(m), let .imageNotSet(m), let .engine(m), let .image(m), let .contract(m):
            return m
        }
    }

    public var description: String { message }
    public var errorDescription: String? { message }
}
