import CXNNPACK

// Every call into XNNPACK and pthreadpool goes through this file: statuses become a typed
// `BackboneError`, and each C object is owned by exactly one Swift value that frees it.

/// Turns an XNNPACK status into a typed error naming the call.
@inline(__always)
func check(_ status: xnn_status, _ call: @autoclosure () -> String) throws(BackboneError) {
    guard status != xnn_status_success else { return }
    let reason = switch status {
    case xnn_status_uninitialized: "XNNPACK not initialised"
    case xnn_status_invalid_parameter: "invalid parameter"
    case xnn_status_invalid_state: "invalid state"
    case xnn_status_unsupported_parameter: "unsupported parameter"
    case xnn_status_unsupported_hardware: "unsupported hardware"
    case xnn_status_out_of_memory: "out of memory"
    default: "status \(status.rawValue)"
    }
    throw BackboneError(.engine(call: call(), detail: reason))
}

enum XNNPACK {
    /// Initialises the library once per process (`xnn_initialize` is idempotent and thread-safe).
    static func initialize() throws(BackboneError) {
        try check(xnn_initialize(nil), "xnn_initialize")
    }

    /// Bytes the kernels may read past the end of an input.
    static let extraBytes = Int(kith_xnn_extra_bytes())
}

/// A pool of `threads` threads (the caller's included) for XNNPACK's parallel loops; nil work
/// pool when one thread is asked for, so that operators run on the calling thread.
final class ThreadPool {
    let pool: pthreadpool_t?
    let threads: Int

    init(threads: Int) {
        self.threads = max(1, threads)
        pool = self.threads > 1 ? pthreadpool_create(self.threads) : nil
    }

    deinit { if let pool { pthreadpool_destroy(pool) } }
}

/// One XNNPACK operator: created with its packed weights, set up for a batch, run.
final class XNNOperator {
    let op: xnn_operator_t

    /// Wraps what `create` writes into its out-parameter.
    init(_ name: String, _ create: (UnsafeMutablePointer<xnn_operator_t?>) -> xnn_status) throws(BackboneError) {
        var op: xnn_operator_t?
        try check(create(&op), name)
        guard let op else { throw BackboneError(.engine(call: name, detail: "no operator returned")) }
        self.op = op
    }

    deinit { xnn_delete_operator(op) }

    func run(_ pool: ThreadPool) throws(BackboneError) {
        try check(xnn_run_operator(op, pool.pool), "xnn_run_operator")
    }
}

// MARK: - Creating and setting up the operators Kith uses

extension XNNOperator {
    /// A 2-D convolution over NHWC; `weights` are [outChannels, kernel, kernel, inChannels]
    /// (dense) or [kernel, kernel, channels] (`depthwise`).
    static func convolution(
        kernel: Int, stride: Int, padding: (top: Int, left: Int, bottom: Int, right: Int),
        groups: Int, groupInputChannels: Int, groupOutputChannels: Int, depthwise: Bool,
        weights: [Float], bias: [Float], clamp: (Float, Float)
    ) throws(BackboneError) -> XNNOperator {
        let channelsIn = groups * groupInputChannels, channelsOut = groups * groupOutputChannels
        return try XNNOperator("xnn_create_convolution2d_nhwc_f32") { out in
            xnn_create_convolution2d_nhwc_f32(
                UInt32(padding.top), UInt32(padding.right), UInt32(padding.bottom), UInt32(padding.left),
                UInt32(kernel), UInt32(kernel), UInt32(stride), UInt32(stride), 1, 1,
                UInt32(groups), groupInputChannels, groupOutputChannels, channelsIn, channelsOut,
                weights, bias, clamp.0, clamp.1, depthwise ? UInt32(XNN_FLAG_DEPTHWISE_CONVOLUTION) : 0, out)
        }
    }

    func setupConvolution(batch: Int, height: Int, width: Int, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                          pool: ThreadPool) throws(BackboneError) {
        try check(xnn_setup_convolution2d_nhwc_f32(op, batch, height, width, input, output, pool.pool),
                  "xnn_setup_convolution2d_nhwc_f32")
    }

    static func add(clamp: (Float, Float)) throws(BackboneError) -> XNNOperator {
        try XNNOperator("xnn_create_add_nd_f32") { xnn_create_add_nd_f32(clamp.0, clamp.1, 0, $0) }
    }

    func setupAdd(count: Int, _ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                  pool: ThreadPool) throws(BackboneError) {
        var shape = [count]
        try check(xnn_setup_add_nd_f32(op, 1, &shape, 1, &shape, a, b, output, pool.pool), "xnn_setup_add_nd_f32")
    }

    static func maxPooling(kernel: Int, stride: Int, padding: Int, channels: Int) throws(BackboneError) -> XNNOperator {
        try XNNOperator("xnn_create_max_pooling2d_nhwc_f32") { out in
            xnn_create_max_pooling2d_nhwc_f32(
                UInt32(padding), UInt32(padding), UInt32(padding), UInt32(padding), UInt32(kernel), UInt32(kernel),
                UInt32(stride), UInt32(stride), 1, 1, channels, channels, channels, -.infinity, .infinity, 0, out)
        }
    }

    func setupMaxPooling(batch: Int, height: Int, width: Int, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                         pool: ThreadPool) throws(BackboneError) {
        try check(xnn_setup_max_pooling2d_nhwc_f32(op, batch, height, width, input, output, pool.pool),
                  "xnn_setup_max_pooling2d_nhwc_f32")
    }

    static func globalAveragePooling(channels: Int) throws(BackboneError) -> XNNOperator {
        try XNNOperator("xnn_create_global_average_pooling_nwc_f32") { out in
            xnn_create_global_average_pooling_nwc_f32(channels, channels, channels, -.infinity, .infinity, 0, out)
        }
    }

    func setupGlobalAveragePooling(batch: Int, pixels: Int, input: UnsafePointer<Float>, output: UnsafeMutablePointer<Float>,
                                   pool: ThreadPool) throws(BackboneError) {
        try check(xnn_setup_global_average_pooling_nwc_f32(op, batch, pixels, input, output, pool.pool),
                  "xnn_setup_global_average_pooling_nwc_f32")
    }
}
