// swift-tools-version: 6.1
import PackageDescription

let strict: [SwiftSetting] = [.enableUpcomingFeature("ExistentialAny")]

let package = Package(
    name: "Kith",
    // The floor of what the code uses: String(validating:as:) needs macOS 15.
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "kith", targets: ["kith"]),
        .executable(name: "kith-bench", targets: ["kith-bench"]),
        .library(name: "KithBackbone", targets: ["KithBackbone"]),
        .library(name: "KithIndex", targets: ["KithIndex"]),
        .library(name: "KithPipeline", targets: ["KithPipeline"]),
        .library(name: "KithQuery", targets: ["KithQuery"])
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2")
    ],
    targets: [
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CTurboJPEG", pkgConfig: "libturbojpeg", providers: [.apt(["libturbojpeg0-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng16", providers: [.apt(["libpng-dev"])]),
        .systemLibrary(name: "CDNNL", providers: [.apt(["libdnnl-dev"])]),
        .systemLibrary(name: "CLMDB", pkgConfig: "lmdb", providers: [.apt(["liblmdb-dev"])]),

        // Kith's own SIMD kernels in C (8-bit code scoring), chosen at run time by the CPU's features.
        .target(name: "CKernels"),
        // The one shape of Kith's errors (a code, a message, the error underneath), for every library.
        .target(name: "KithErrors", swiftSettings: strict),
        .target(name: "KithMath", dependencies: ["CBLAS", "CDNNL", "CKernels", "KithErrors"], swiftSettings: strict),
        .target(name: "KithImage", dependencies: ["CTurboJPEG", "CPNG", "KithErrors"], swiftSettings: strict),
        .target(
            name: "KithBackbone", dependencies: ["CDNNL", "KithErrors", "KithMath", "KithImage"], swiftSettings: strict),
        .target(name: "KithIndex", dependencies: ["CLMDB", "KithErrors", "KithMath"], swiftSettings: strict),
        .target(
            name: "KithPipeline", dependencies: ["KithErrors", "KithMath", "KithImage", "KithBackbone", "KithIndex"],
            swiftSettings: strict),
        .target(
            name: "KithAdapt", dependencies: ["KithErrors", "KithMath", "KithBackbone", "KithIndex", "KithPipeline"],
            swiftSettings: strict),
        .target(
            name: "KithQuery",
            dependencies: [
                "KithErrors", "KithMath", "KithImage", "KithBackbone", "KithIndex", "KithPipeline", "KithAdapt"
            ],
            swiftSettings: strict),
        .target(
            name: "KithServer",
            dependencies: [
                "KithAdapt", "KithBackbone", "KithImage", "KithIndex", "KithMath", "KithPipeline", "KithQuery",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio")
            ],
            resources: [.copy("openapi.json"), .copy("Page")], swiftSettings: strict),
        // The command line's shared options and helpers, for `kith` and `kith-bench`.
        .target(
            name: "KithCommandLine",
            dependencies: [
                "KithAdapt", "KithBackbone", "KithErrors", "KithImage", "KithIndex", "KithMath", "KithPipeline",
                "KithQuery",
                .product(name: "ArgumentParser", package: "swift-argument-parser")
            ],
            swiftSettings: strict),
        // Kith's benchmarks (tools/bench runs them beside their anchors), out of the product.
        .executableTarget(
            name: "kith-bench",
            dependencies: [
                "KithBackbone", "KithCommandLine", "KithImage", "KithIndex", "KithMath", "KithQuery",
                .product(name: "ArgumentParser", package: "swift-argument-parser")
            ],
            swiftSettings: strict),
        .executableTarget(
            name: "kith",
            dependencies: [
                "KithAdapt", "KithBackbone", "KithCommandLine", "KithImage", "KithIndex", "KithMath", "KithPipeline",
                "KithQuery", "KithServer", .product(name: "ArgumentParser", package: "swift-argument-parser")
            ],
            swiftSettings: strict),

        // Tests: one target per module (a change runs its own tests), over shared fixtures and helpers.
        .target(
            name: "KithTestSupport", dependencies: ["KithMath", "KithBackbone", "KithIndex"],
            path: "Tests/KithTestSupport", swiftSettings: strict),
        .testTarget(
            name: "KithMathTests", dependencies: ["KithMath", "CKernels", "KithTestSupport"], swiftSettings: strict),
        .testTarget(
            name: "KithImageTests", dependencies: ["KithImage", "KithMath", "KithTestSupport"], swiftSettings: strict),
        .testTarget(
            name: "KithBackboneTests", dependencies: ["KithBackbone", "KithImage", "KithMath", "KithTestSupport"],
            swiftSettings: strict),
        .testTarget(
            name: "KithIndexTests", dependencies: ["KithIndex", "KithMath", "KithTestSupport"], swiftSettings: strict),
        .testTarget(
            name: "KithPipelineTests",
            dependencies: ["KithPipeline", "KithBackbone", "KithImage", "KithIndex", "KithTestSupport"],
            swiftSettings: strict),
        .testTarget(
            name: "KithAdaptTests",
            dependencies: ["KithAdapt", "KithMath", "KithIndex", "KithBackbone", "KithPipeline", "KithTestSupport"],
            swiftSettings: strict),
        .testTarget(
            name: "KithQueryTests",
            dependencies: ["KithQuery", "KithAdapt", "KithErrors", "KithIndex", "KithMath", "KithTestSupport"],
            swiftSettings: strict),
        .testTarget(
            name: "KithServerTests",
            dependencies: [
                "KithServer", "KithQuery", "KithIndex", "KithImage", "KithMath", "KithPipeline", "KithBackbone",
                "KithTestSupport",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types")
            ],
            swiftSettings: strict),
        .testTarget(
            name: "kithTests", dependencies: ["KithIndex", "KithMath", "KithQuery", "KithTestSupport"],
            swiftSettings: strict)
    ]
)
