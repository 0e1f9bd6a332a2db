// The demo's platform-free core: plain Kotlin/JVM, no Android dependency. Its tests read the repository's golden
// files (tests/golden/); the CI path is android_demo/run-jvm-tests.sh (Debian's kotlinc), this is the Gradle one.
import org.jetbrains.kotlin.gradle.dsl.JvmTarget

plugins {
    alias(libs.plugins.kotlin.jvm)
}

// Java 17 bytecode, like the app (built with whatever JDK runs Gradle, 17 or later).
java {
    sourceCompatibility = JavaVersion.VERSION_17
    targetCompatibility = JavaVersion.VERSION_17
}

kotlin {
    compilerOptions { jvmTarget.set(JvmTarget.JVM_17) }
}

dependencies {
    testImplementation(libs.junit)
}

val golden = rootDir.resolve("../tests/golden")

// The mask IoU bound is the parity table's e2e fp32 row (pocketsam.runtime.parity), never retyped here:
// -Ppocketsam.maskIou=B, or read from an installed pocketsam.
val maskIou: Provider<String> = providers.gradleProperty("pocketsam.maskIou").orElse(
    providers.exec {
        commandLine("python3", "-c", "from pocketsam.runtime.parity import checks_for\n" +
            "print(next(c.bound for c in checks_for('e2e', 'fp32') if c.metric == 'mask_iou'))")
        isIgnoreExitValue = true
    }.standardOutput.asText.map { it.trim() }
)

tasks.test {
    inputs.dir(golden)
    systemProperty("pocketsam.golden", golden.absolutePath)
    doFirst {
        val bound = maskIou.get()
        if (bound.isEmpty()) {
            throw GradleException("the golden tests need the parity table's mask IoU bound: install pocketsam " +
                "(pip install -e ..) or pass -Ppocketsam.maskIou=B")
        }
        systemProperty("pocketsam.maskIou", bound)
    }
    testLogging { events("passed", "skipped", "failed"); showStandardStreams = true }
}
