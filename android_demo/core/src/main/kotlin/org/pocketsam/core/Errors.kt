package org.pocketsam.core

/**
 * A mistake the user can fix (a bundle, a photo, a prompt, a delegate that refuses the model): the app shows its
 * message and carries on. Anything else thrown by the core is a bug.
 */
open class PocketSamException(message: String, cause: Throwable? = null) : RuntimeException(message, cause)

/** A bundle folder that cannot be used: missing parts, wrong spec version, bad manifest, hashes that differ. */
class BundleException(message: String, cause: Throwable? = null) : PocketSamException(message, cause)

/** A prompt the decoder cannot take (a point outside the image, too many points for a fixed-shape decoder). */
class PromptException(message: String) : PocketSamException(message)

/** A prediction before `SegmentSession.setImage`. */
class ImageNotSetException(message: String) : PocketSamException(message)

/** An engine that cannot open or run a graph (a delegate refusing the model, a missing native library). */
class EngineException(message: String, cause: Throwable? = null) : PocketSamException(message, cause)
