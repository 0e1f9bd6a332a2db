// pocketsam's Android demo: `core` (pure Kotlin, the pre/post-processing and the segment session, JVM-tested
// against tests/golden/) and `app` (the Android shell: UI and the LiteRT / ONNX Runtime engines).
pluginManagement {
    repositories {
        google()
        mavenCentral()
        gradlePluginPortal()
    }
}

dependencyResolutionManagement {
    repositoriesMode.set(RepositoriesMode.FAIL_ON_PROJECT_REPOS)
    repositories {
        google()  // LiteRT and AndroidX are on Google's Maven, not on Maven Central
        mavenCentral()
    }
}

rootProject.name = "pocketsam-android"
include(":core", ":app")
