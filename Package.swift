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
        .target(name: "KithIndex", dependencies: ["CLMDB", "KithMath", "KithImage", "KithBackbone"], swiftSettings: simd + strict),
        .target(name: "KithQuery", dependencies: ["KithMath", "KithIndex", "KithBackbone"], swiftSettings: simd + strict),
        .target(
            name: "KithServer",
            dependencies: ["KithBackbone", "KithImage", "KithIndex", "KithMath", "KithQuery",
                           .product(name: "Hummingbird", package: "hummingbird")],
            resources: [.copy("openapi.json")], swiftSettings: strict),
        .executableTarget(
            name: "kith",
            dependencies: [
                "KithBackbone", "KithImage", "KithIndex", "KithMath", "KithQuery", "KithServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: strict),

        .testTarget(
            name: "KithTests", dependencies: ["KithBackbone", "KithImage", "KithIndex", "KithMath", "KithQuery", "KithServer",
                           .product(name: "HummingbirdTesting", package: "hummingbird")],
            swiftSettings: strict),
    ]
)
