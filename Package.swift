// swift-tools-version: 6.1
import PackageDescription

// Hand-written SIMD loops (depthwise convolutions, resizing) only vectorise with a concrete CPU
// target; `haswell` (AVX2 + FMA) runs on every x86-64 machine of the last decade.
#if arch(x86_64)
let simd: [SwiftSetting] = [.unsafeFlags(["-target-cpu", "haswell"])]
#else
let simd: [SwiftSetting] = []
#endif
let strict: [SwiftSetting] = [.enableUpcomingFeature("ExistentialAny")]

let package = Package(
    name: "Kith",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "kith", targets: ["kith"]),
        .library(name: "KithBackbone", targets: ["KithBackbone"]),
        .library(name: "KithIndex", targets: ["KithIndex"]),
        .library(name: "KithQuery", targets: ["KithQuery"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
    ],
    targets: [
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CTurboJPEG", pkgConfig: "libturbojpeg", providers: [.apt(["libturbojpeg0-dev"])]),
        .systemLibrary(name: "CPNG", pkgConfig: "libpng16", providers: [.apt(["libpng-dev"])]),
        .systemLibrary(name: "CDNNL", providers: [.apt(["libdnnl-dev"])]),
        .systemLibrary(name: "CLMDB", pkgConfig: "lmdb", providers: [.apt(["liblmdb-dev"])]),

        .target(name: "KithMath", dependencies: ["CBLAS"], swiftSettings: simd + strict),
        .target(name: "KithImage", dependencies: ["CTurboJPEG", "CPNG"], swiftSettings: simd + strict),
        .target(name: "KithBackbone", dependencies: ["CDNNL", "KithMath", "KithImage"], swiftSettings: strict),
        .target(name: "KithIndex", dependencies: ["CLMDB", "KithMath"], swiftSettings: simd + strict),
        .target(name: "KithPipeline", dependencies: ["KithMath", "KithImage", "KithBackbone", "KithIndex"], swiftSettings: strict),
        .target(name: "KithQuery", dependencies: ["KithMath", "KithImage", "KithBackbone", "KithIndex", "KithPipeline"], swiftSettings: simd + strict),
        .target(
            name: "KithServer",
            dependencies: ["KithBackbone", "KithImage", "KithIndex", "KithMath", "KithPipeline", "KithQuery",
                           .product(name: "Hummingbird", package: "hummingbird")],
            resources: [.copy("openapi.json")], swiftSettings: strict),
        .executableTarget(
            name: "kith",
            dependencies: [
                "KithBackbone", "KithImage", "KithIndex", "KithMath", "KithPipeline", "KithQuery", "KithServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict),

        // Tests: one target per module (a change runs its own tests), over shared fixtures and helpers.
        .target(name: "KithTestSupport", dependencies: ["KithBackbone", "KithIndex", "KithQuery"], path: "Tests/KithTestSupport", swiftSettings: strict),
        .testTarget(name: "KithMathTests", dependencies: ["KithMath", "KithQuery", "KithTestSupport"], swiftSettings: strict),
        .testTarget(name: "KithImageTests", dependencies: ["KithImage", "KithQuery", "KithTestSupport"], swiftSettings: strict),
        .testTarget(name: "KithBackboneTests", dependencies: ["KithBackbone", "KithImage", "KithMath", "KithTestSupport"], swiftSettings: strict),
        .testTarget(name: "KithIndexTests", dependencies: ["KithIndex", "KithMath", "KithTestSupport"], swiftSettings: strict),
        .testTarget(name: "KithPipelineTests", dependencies: ["KithPipeline", "KithBackbone", "KithImage", "KithIndex", "KithTestSupport"], swiftSettings: strict),
        .testTarget(name: "KithQueryTests", dependencies: ["KithQuery", "KithIndex", "KithMath", "KithTestSupport"], swiftSettings: strict),
        .testTarget(
            name: "KithServerTests",
            dependencies: ["KithServer", "KithQuery", "KithIndex", "KithImage", "KithMath", "KithTestSupport",
                           .product(name: "HummingbirdTesting", package: "hummingbird")],
            swiftSettings: strict),
        .testTarget(name: "kithTests", dependencies: ["KithIndex", "KithMath", "KithQuery", "KithTestSupport"], swiftSettings: strict),
    ]
)
