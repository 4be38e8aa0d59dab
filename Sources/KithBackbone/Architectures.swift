import KithImage

/// The network designs Kith can run, with PyTorch state-dict tensor names.
public enum Architecture: String, CaseIterable, Sendable, Codable {
    case efficientNetLite0 = "efficientnet-lite0"
    case efficientNetLite2 = "efficientnet-lite2"
    case mobileNetV2 = "mobilenetv2"
    case resnet18, resnet34, resnet50

    /// Length of the embedding (the globally pooled features).
    public var dimension: Int {
        switch self {
        case .efficientNetLite0, .efficientNetLite2, .mobileNetV2: 1280
        case .resnet18, .resnet34: 512
        case .resnet50: 2048
        }
    }

    /// The preprocessing the published weights were trained with.
    public var defaultPreprocessing: Preprocessing {
        switch self {
        case .efficientNetLite0, .efficientNetLite2:
            Preprocessing(
                inputSize: self == .efficientNetLite0 ? 224 : 260, cropFraction: 224.0 / 256.0, filter: .bicubic,
                mean: [127, 127, 127], std: [128, 128, 128])
        case .mobileNetV2, .resnet18, .resnet34, .resnet50:
            Preprocessing(
                inputSize: 224, cropFraction: 224.0 / 256.0, filter: .bilinear,
                mean: [0.485 * 255, 0.456 * 255, 0.406 * 255], std: [0.229 * 255, 0.224 * 255, 0.225 * 255])
        }
    }

    func build(_ weights: WeightReader) -> (layers: [any Layer], classifier: Linear?) {
        switch self {
        case .efficientNetLite0: buildEfficientNetLite(weights, width: 1.0, depth: 1.0)
        case .efficientNetLite2: buildEfficientNetLite(weights, width: 1.1, depth: 1.2)
        case .mobileNetV2: buildMobileNetV2(weights)
        case .resnet18: buildResNet(weights, blocks: [2, 2, 2, 2], bottleneck: false)
        case .resnet34: buildResNet(weights, blocks: [3, 4, 6, 3], bottleneck: false)
        case .resnet50: buildResNet(weights, blocks: [3, 4, 6, 3], bottleneck: true)
        }
    }
}

// MARK: - Building blocks with BatchNorm folded in

extension WeightReader {
    /// A convolution `conv` (PyTorch [out, in, k, k], no bias) followed by BatchNorm `bn`.
    func convBN(
        _ conv: String, _ bn: String, in cin: Int, out cout: Int, kernel: Int, stride: Int = 1,
        padding: Padding, epsilon: Float, activation: Activation
    ) -> Conv2D {
        let w = tensor("\(conv).weight", shape: [cout, cin, kernel, kernel])
        let (scale, bias) = batchNorm(bn, channels: cout, epsilon: epsilon)
        // [out, in, ky, kx] → [ky, kx, in, out], scaled per output channel.
        var folded = [Float](repeating: 0, count: w.count)
        for o in 0..<cout {
            for i in 0..<cin {
                for ky in 0..<kernel {
                    for kx in 0..<kernel {
                        folded[((ky * kernel + kx) * cin + i) * cout + o] =
                            w[((o * cin + i) * kernel + ky) * kernel + kx] * scale[o]
                    }
                }
            }
        }
        return Conv2D(
            kernel: kernel, stride: stride, padding: padding, inChannels: cin, outChannels: cout,
            weights: folded, bias: bias, activation: activation)
    }

    /// A depthwise convolution `conv` (PyTorch [c, 1, k, k]) followed by BatchNorm `bn`.
    func depthwiseBN(
        _ conv: String, _ bn: String, channels c: Int, kernel: Int, stride: Int, padding: Padding,
        epsilon: Float, activation: Activation
    ) -> DepthwiseConv2D {
        let w = tensor("\(conv).weight", shape: [c, 1, kernel, kernel])
        let (scale, bias) = batchNorm(bn, channels: c, epsilon: epsilon)
        var folded = [Float](repeating: 0, count: w.count)
        for ch in 0..<c {
            for k in 0..<(kernel * kernel) { folded[k * c + ch] = w[ch * kernel * kernel + k] * scale[ch] }
        }
        return DepthwiseConv2D(
            kernel: kernel, stride: stride, padding: padding, channels: c,
            weights: folded, bias: bias, activation: activation)
    }

    /// BatchNorm in inference as y = scale · x + bias.
    func batchNorm(_ name: String, channels: Int, epsilon: Float) -> (scale: [Float], bias: [Float]) {
        let gamma = tensor("\(name).weight", shape: [channels])
        let beta = tensor("\(name).bias", shape: [channels])
        let mean = tensor("\(name).running_mean", shape: [channels])
        let variance = tensor("\(name).running_var", shape: [channels])
        let scale = (0..<channels).map { gamma[$0] / (variance[$0] + epsilon).squareRoot() }
        return (scale, (0..<channels).map { beta[$0] - mean[$0] * scale[$0] })
    }

    /// The 1000-way classifier `name`, if the file has one.
    func classifier(_ name: String, in features: Int) -> Linear? {
        guard has("\(name).weight") else { return nil }
        let classes = max(1, shape(of: "\(name).weight").first ?? 1)
        return Linear(
            inFeatures: features, outFeatures: classes,
            weights: tensor("\(name).weight", shape: [classes, features]),
            bias: tensor("\(name).bias", shape: [classes]))
    }
}

/// An inverted residual block (MobileNetV2, EfficientNet-Lite): optional 1 × 1 expansion,
/// depthwise convolution, linear 1 × 1 projection; identity shortcut when shapes allow.
private func invertedResidual(expand: Conv2D?, depthwise: DepthwiseConv2D, project: Conv2D, residual: Bool)
    -> [any Layer]
{
    let body: [any Layer] = (expand.map { [$0] } ?? []) + [depthwise]
    return residual ? [Residual(body: body, last: project, shortcut: [])] : body + [project]
}

// MARK: - EfficientNet-Lite (lukemelas-style names: _conv_stem, _blocks.N._expand_conv, …)

private func buildEfficientNetLite(_ weights: WeightReader, width: Double, depth: Double) -> ([any Layer], Linear?) {
    // (kernel, stride, expansion, output channels, repeats) of EfficientNet-B0.
    let stages = [
        (3, 1, 1, 16, 1), (3, 2, 6, 24, 2), (5, 2, 6, 40, 2), (3, 2, 6, 80, 3),
        (5, 1, 6, 112, 3), (5, 2, 6, 192, 4), (3, 1, 6, 320, 1)
    ]
    func roundFilters(_ filters: Int) -> Int {
        let scaled = Double(filters) * width
        var rounded = max(8, Int(scaled + 4) / 8 * 8)
        if Double(rounded) < 0.9 * scaled { rounded += 8 }
        return rounded
    }
    let epsilon: Float = 1e-3
    var layers: [any Layer] = [
        weights.convBN(
            "_conv_stem", "_bn0", in: 3, out: 32, kernel: 3, stride: 2,
            padding: .same, epsilon: epsilon, activation: .relu6)
    ]
    var channels = 32, index = 0
    for (stage, (kernel, stride, expansion, out, repeats)) in stages.enumerated() {
        // Lite models keep the first and last stages' repeats (and the stem and head) fixed.
        let count = stage == 0 || stage == stages.count - 1 ? repeats : Int((Double(repeats) * depth).rounded(.up))
        let outChannels = roundFilters(out)
        for r in 0..<count {
            let p = "_blocks.\(index)", s = r == 0 ? stride : 1
            let hidden = channels * expansion
            let expand =
                expansion == 1
                ? nil
                : weights.convBN(
                    "\(p)._expand_conv", "\(p)._bn0", in: channels, out: hidden, kernel: 1, padding: .same,
                    epsilon: epsilon, activation: .relu6)
            let depthwise = weights.depthwiseBN(
                "\(p)._depthwise_conv", "\(p)._bn1", channels: hidden, kernel: kernel, stride: s, padding: .same,
                epsilon: epsilon, activation: .relu6)
            let project = weights.convBN(
                "\(p)._project_conv", "\(p)._bn2", in: hidden, out: outChannels, kernel: 1, padding: .same,
                epsilon: epsilon, activation: .none)
            layers += invertedResidual(
                expand: expand, depthwise: depthwise, project: project,
                residual: s == 1 && channels == outChannels)
            channels = outChannels
            index += 1
        }
    }
    layers.append(
        weights.convBN(
            "_conv_head", "_bn1", in: channels, out: 1280, kernel: 1, padding: .same,
            epsilon: epsilon, activation: .relu6))
    return (layers, weights.classifier("_fc", in: 1280))
}

// MARK: - MobileNetV2 (names features.N.conv.M as in the original PyTorch port)

private func buildMobileNetV2(_ weights: WeightReader) -> ([any Layer], Linear?) {
    let settings = [
        (1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)
    ]
    let epsilon: Float = 1e-5
    var layers: [any Layer] = [
        weights.convBN(
            "features.0.0", "features.0.1", in: 3, out: 32, kernel: 3, stride: 2,
            padding: .symmetric(1), epsilon: epsilon, activation: .relu6)
    ]
    var channels = 32, index = 1
    for (t, c, n, s) in settings {
        for r in 0..<n {
            let p = "features.\(index).conv", stride = r == 0 ? s : 1, hidden = channels * t
            let expand =
                t == 1
                ? nil
                : weights.convBN(
                    "\(p).0", "\(p).1", in: channels, out: hidden, kernel: 1, padding: .symmetric(0),
                    epsilon: epsilon, activation: .relu6)
            let d = t == 1 ? 0 : 3  // index of the depthwise convolution inside `conv`
            let depthwise = weights.depthwiseBN(
                "\(p).\(d)", "\(p).\(d + 1)", channels: hidden, kernel: 3, stride: stride, padding: .symmetric(1),
                epsilon: epsilon, activation: .relu6)
            let project = weights.convBN(
                "\(p).\(d + 3)", "\(p).\(d + 4)", in: hidden, out: c, kernel: 1, padding: .symmetric(0),
                epsilon: epsilon, activation: .none)
            layers += invertedResidual(
                expand: expand, depthwise: depthwise, project: project,
                residual: stride == 1 && channels == c)
            channels = c
            index += 1
        }
    }
    layers.append(
        weights.convBN(
            "features.\(index).0", "features.\(index).1", in: channels, out: 1280, kernel: 1,
            padding: .symmetric(0), epsilon: epsilon, activation: .relu6))
    return (layers, weights.classifier("classifier.1", in: 1280))
}

// MARK: - ResNet (torchvision names: conv1, bn1, layerL.B.convN, layerL.B.downsample.0/1, fc)

private func buildResNet(_ weights: WeightReader, blocks: [Int], bottleneck: Bool) -> ([any Layer], Linear?) {
    let epsilon: Float = 1e-5, expansion = bottleneck ? 4 : 1
    var layers: [any Layer] = [
        weights.convBN(
            "conv1", "bn1", in: 3, out: 64, kernel: 7, stride: 2, padding: .symmetric(3),
            epsilon: epsilon, activation: .relu),
        MaxPool2D()
    ]
    var channels = 64
    for (stage, count) in blocks.enumerated() {
        let planes = 64 << stage
        for b in 0..<count {
            let p = "layer\(stage + 1).\(b)", stride = b == 0 && stage > 0 ? 2 : 1
            let out = planes * expansion
            let shortcut: [any Layer] =
                stride != 1 || channels != out
                ? [
                    weights.convBN(
                        "\(p).downsample.0", "\(p).downsample.1", in: channels, out: out, kernel: 1,
                        stride: stride, padding: .symmetric(0), epsilon: epsilon, activation: .none)
                ]
                : []
            let body: [any Layer]
            let last: Conv2D
            if bottleneck {
                body = [
                    weights.convBN(
                        "\(p).conv1", "\(p).bn1", in: channels, out: planes, kernel: 1, padding: .symmetric(0),
                        epsilon: epsilon, activation: .relu),
                    weights.convBN(
                        "\(p).conv2", "\(p).bn2", in: planes, out: planes, kernel: 3, stride: stride,
                        padding: .symmetric(1), epsilon: epsilon, activation: .relu)
                ]
                last = weights.convBN(
                    "\(p).conv3", "\(p).bn3", in: planes, out: out, kernel: 1, padding: .symmetric(0),
                    epsilon: epsilon, activation: .relu)
            } else {
                body = [
                    weights.convBN(
                        "\(p).conv1", "\(p).bn1", in: channels, out: planes, kernel: 3, stride: stride,
                        padding: .symmetric(1), epsilon: epsilon, activation: .relu)
                ]
                last = weights.convBN(
                    "\(p).conv2", "\(p).bn2", in: planes, out: out, kernel: 3, padding: .symmetric(1),
                    epsilon: epsilon, activation: .relu)
            }
            layers.append(Residual(body: body, last: last, shortcut: shortcut))
            channels = out
        }
    }
    return (layers, weights.classifier("fc", in: channels))
}
