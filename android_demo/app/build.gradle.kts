import org.jetbrains.kotlin.gradle.dsl.JvmTarget

// The Android shell of the demo: UI, photo picking, and the engines (LiteRT; ONNX Runtime for ONNX bundles).
// Everything that is not the Android framework is in :core.
plugins {
    alias(libs.plugins.android.application)
    alias(libs.plugins.kotlin.android)
    alias(libs.plugins.kotlin.compose)
}

android {
    namespace = "org.pocketsam.demo"
    compileSdk = 36

    defaultConfig {
        applicationId = "org.pocketsam.demo"
        minSdk = 26  // the photo picker is back-ported below Android 13 by androidx.activity
        targetSdk = 36
        versionCode = 1
        versionName = "0.1"
        // the engines' versions for the benchmark rows, from the version catalog (not retyped)
        buildConfigField("String", "LITERT_VERSION", "\"${libs.versions.litert.get()}\"")
        buildConfigField("String", "ONNXRUNTIME_VERSION", "\"${libs.versions.onnxruntime.get()}\"")
    }

    buildTypes {
        release {
            isMinifyEnabled = false
        }
    }
    buildFeatures {
        compose = true
        buildConfig = true
    }
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
}

kotlin {
    compilerOptions { jvmTarget.set(JvmTarget.JVM_17) }
}

/**
 * Copies the repository's `tests/golden/contract.json` (what `pocketsam.runtime.spec.write_contract` writes: the
 * constants, graph I/O and bundle layout) and one golden photo (the bundled sample) into the app's assets at build
 * time, so the app reads the contract Python wrote instead of a copy that could drift.
 */
abstract class CopyDemoAssets : DefaultTask() {
    @get:InputFile
    abstract val contract: RegularFileProperty

    @get:InputFile
    abstract val sample: RegularFileProperty

    @get:OutputDirectory
    abstract val outputDir: DirectoryProperty

    @TaskAction
    fun copy() {
        val out = outputDir.get().asFile
        out.deleteRecursively()
        out.mkdirs()
        contract.get().asFile.copyTo(File(out, "contract.json"))
        sample.get().asFile.copyTo(File(out, "sample.png"))
    }
}

val golden: File = rootDir.resolve("../tests/golden").normalize()
val copyDemoAssets = tasks.register<CopyDemoAssets>("copyDemoAssets") {
    contract.set(golden.resolve("contract.json"))
    sample.set(golden.resolve("images/chelsea.png"))
}

androidComponents {
    onVariants { variant ->
        variant.sources.assets?.addGeneratedSourceDirectory(copyDemoAssets, CopyDemoAssets::outputDir)
    }
}

dependencies {
    implementation(project(":core"))

    implementation(libs.litert)
    implementation(libs.litert.gpu)
    implementation(libs.litert.gpu.api)
    implementation(libs.onnxruntime.android)

    implementation(libs.kotlinx.coroutines.android)
    implementation(libs.androidx.core.ktx)
    implementation(libs.androidx.activity.compose)
    implementation(libs.androidx.lifecycle.viewmodel.compose)
    implementation(libs.androidx.lifecycle.runtime.compose)
    implementation(libs.androidx.exifinterface)
    implementation(platform(libs.androidx.compose.bom))
    implementation(libs.androidx.compose.ui)
    implementation(libs.androidx.compose.foundation)
    implementation(libs.androidx.compose.material3)
}
