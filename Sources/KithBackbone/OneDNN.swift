import CDNNL
import Foundation
import KithMath

// Every call into oneDNN goes through this file: statuses become a typed `BackboneError` naming
// the call, and each C object is owned by one Swift value that destroys it.

/// Turns a oneDNN status into a typed error naming the call.
@inline(__always)
func check(_ status: dnnl_status_t, _ call: @autoclosure () -> String) throws(BackboneError) {
    guard status != dnnl_success else { return }
    let detail = dnnl_status2str(status).map { String(cString: $0) } ?? "status \(status.rawValue)"
    throw BackboneError(.engine(call: call(), detail: detail))
}

/// Wraps what `create` writes into its out-parameter, failing if it is left empty.
private func created<T>(_ call: String, _ create: (UnsafeMutablePointer<T?>) -> dnnl_status_t) throws(BackboneError)
    -> T
{
    var object: T?
    try check(create(&object), call)
    guard let object else { throw BackboneError(.engine(call: call, detail: "nothing returned")) }
    return object
}

enum OneDNN {
    /// The CPU engine, created once per process (engines are thread-safe).
    static func engine() throws(BackboneError) -> dnnl_engine_t {
        try shared.get()
    }

    private static let shared: Result<CPUEngine, BackboneError> = {
        do throws(BackboneError) {
            return .success(CPUEngine(try created("dnnl_engine_create") { dnnl_engine_create($0, dnnl_cpu, 0) }))
        } catch {
            return .failure(error)
        }
    }()

    /// Sets the calling thread's thread count for the primitives it creates and runs next.
    static func setThreads(_ threads: Int) {
        _ = kith_omp_set_num_threads(Int32(max(1, threads)))
    }

    /// Channels per block of the blocked feature-map layout: the vector width of the kernels
    /// oneDNN dispatches to on this CPU (16 floats with AVX-512, else 8). Its JIT convolutions
    /// take only their own width; any other falls back to the reference kernels, hundreds of
    /// times slower.
    static let channelBlock: Int = {
        let isa = dnnl_get_effective_cpu_isa().rawValue, avx512 = dnnl_cpu_isa_avx512_core.rawValue
        return isa & avx512 == avx512 ? 16 : 8
    }()

    /// A plain (dense) memory descriptor of `dims` in the order `tag`.
    static func descriptor(_ dims: [Int], _ tag: dnnl_format_tag_t) throws(BackboneError) -> dnnl_memory_desc_t {
        var md = dnnl_memory_desc_t()
        let dims = dims.map(Int64.init)
        try check(
            dnnl_memory_desc_init_by_tag(&md, Int32(dims.count), dims, dnnl_f32, tag), "dnnl_memory_desc_init_by_tag")
        return md
    }
}

/// A memory layout with the bytes it takes.
struct DNNLDescriptor {
    let md: dnnl_memory_desc_t
    var bytes: Int {
        var md = md
        return dnnl_memory_desc_get_size(&md)
    }

    enum Layout { case nhwc, nchw, blocked }

    /// A feature map of `batch` images of `shape` in `layout`; `blocked` keeps channels in
    /// blocks of `OneDNN.channelBlock` (nChw16c or nChw8c, padded with zeros). oneDNN's dims are
    /// always N, C, H, W.
    static func activation(batch: Int, _ shape: TensorShape, _ layout: Layout) throws(BackboneError) -> DNNLDescriptor {
        let tag =
            switch layout {
            case .nhwc: dnnl_nhwc
            case .nchw: dnnl_nchw
            case .blocked: OneDNN.channelBlock == 16 ? dnnl_nChw16c : dnnl_nChw8c
            }
        return DNNLDescriptor(md: try OneDNN.descriptor([batch, shape.c, shape.h, shape.w], tag))
    }
}

/// The process's engine; never destroyed (it lives as long as the static that holds it).
struct CPUEngine: @unchecked Sendable {
    // @unchecked: a oneDNN engine is thread-safe and immutable once created.
    let engine: dnnl_engine_t
    init(_ engine: dnnl_engine_t) { self.engine = engine }
}

extension Result where Success == CPUEngine, Failure == BackboneError {
    fileprivate func get() throws(BackboneError) -> dnnl_engine_t {
        switch self {
        case .success(let e): return e.engine
        case .failure(let error): throw error
        }
    }
}

/// A oneDNN stream: primitives run on it in order, on the calling thread's OpenMP team.
final class DNNLStream {
    let stream: dnnl_stream_t

    init() throws(BackboneError) {
        let engine = try OneDNN.engine()
        stream = try created("dnnl_stream_create") {
            dnnl_stream_create($0, engine, UInt32(dnnl_stream_default_flags.rawValue))
        }
    }

    deinit { dnnl_stream_destroy(stream) }

    func wait() throws(BackboneError) { try check(dnnl_stream_wait(stream), "dnnl_stream_wait") }
}

/// A oneDNN memory object: either over a buffer the caller owns, or allocated by oneDNN.
final class DNNLMemory {
    let memory: dnnl_memory_t
    let descriptor: DNNLDescriptor

    /// Memory over `buffer`, which must outlive it (nil: none yet, `point(at:)` sets it before use).
    init(_ md: dnnl_memory_desc_t, buffer: UnsafeMutableRawPointer?) throws(BackboneError) {
        let engine = try OneDNN.engine()
        var md = md
        memory = try created("dnnl_memory_create") { dnnl_memory_create($0, &md, engine, buffer) }
        descriptor = DNNLDescriptor(md: md)
    }

    /// Memory whose bytes oneDNN allocates and owns.
    init(allocating md: dnnl_memory_desc_t) throws(BackboneError) {
        let engine = try OneDNN.engine()
        var md = md
        memory = try created("dnnl_memory_create") { dnnl_memory_create($0, &md, engine, kith_dnnl_memory_allocate()) }
        descriptor = DNNLDescriptor(md: md)
    }

    convenience init(_ layout: DNNLDescriptor, buffer: UnsafeMutableRawPointer?) throws(BackboneError) {
        try self.init(layout.md, buffer: buffer)
    }

    /// Makes the memory read and write `buffer`.
    func point(at buffer: UnsafeMutableRawPointer) throws(BackboneError) {
        try check(dnnl_memory_set_data_handle(memory, buffer), "dnnl_memory_set_data_handle")
    }

    deinit { dnnl_memory_destroy(memory) }

    /// oneDNN-owned memory of layout `md` holding `values`, which are laid out as `plain` says.
    static func reordered(
        _ values: [Float], plain: dnnl_memory_desc_t, into md: dnnl_memory_desc_t,
        stream: DNNLStream
    ) throws(BackboneError) -> DNNLMemory {
        let target = try DNNLMemory(allocating: md)
        let reorder = try DNNLPrimitive(reorderFrom: plain, to: md)
        let bytes = UnsafeMutableRawBufferPointer.allocate(
            byteCount: values.count * MemoryLayout<Float>.stride,
            alignment: 64)
        defer { bytes.deallocate() }
        values.withUnsafeBytes { bytes.copyMemory(from: $0) }
        let source = try DNNLMemory(plain, buffer: bytes.baseAddress!)
        try reorder.execute([(kith_dnnl_arg_from(), source), (kith_dnnl_arg_to(), target)], on: stream)
        try stream.wait()
        return target
    }
}

/// Weights and biases reordered into the layouts the primitives asked for, shared by all the
/// execution contexts of one network: contexts for other batch sizes or thread counts mostly
/// want the same layouts, and the weights are only read while primitives run.
final class DNNLWeightCache: Sendable {
    // Safe: a memory object in `entries` is never written after its reorder.
    nonisolated(unsafe) private let entries = Locked<[Int: [DNNLMemory]]>([:])

    /// `values` (laid out as `plain` says) in the layout `md`, for the parameter numbered `key`.
    func memory(
        _ key: Int, _ values: [Float], plain: dnnl_memory_desc_t, as md: dnnl_memory_desc_t,
        stream: DNNLStream
    ) throws(BackboneError) -> DNNLMemory {
        let cached = entries.withLock { entries in
            entries[key]?.first { entry in
                var (a, b) = (entry.descriptor.md, md)
                return dnnl_memory_desc_equal(&a, &b) != 0
            }
        }
        if let cached { return cached }
        let memory = try DNNLMemory.reordered(values, plain: plain, into: md, stream: stream)
        entries.withLock { $0[key, default: []].append(memory) }
        return memory
    }
}

/// A primitive (a convolution, a pooling, a reorder) created from its descriptor.
final class DNNLPrimitive {
    let primitive: dnnl_primitive_t

    /// Creates the primitive of `pd` (which the caller still owns).
    init(_ pd: dnnl_primitive_desc_t) throws(BackboneError) {
        primitive = try created("dnnl_primitive_create") { dnnl_primitive_create($0, pd) }
    }

    convenience init(reorderFrom source: dnnl_memory_desc_t, to target: dnnl_memory_desc_t) throws(BackboneError) {
        let engine = try OneDNN.engine()
        var (source, target) = (source, target)
        let pd: dnnl_primitive_desc_t = try created("dnnl_reorder_primitive_desc_create") {
            dnnl_reorder_primitive_desc_create($0, &source, engine, &target, engine, nil)
        }
        defer { dnnl_primitive_desc_destroy(pd) }
        try self.init(pd)
    }

    deinit { dnnl_primitive_destroy(primitive) }

    func execute(_ arguments: [(Int32, DNNLMemory)], on stream: DNNLStream) throws(BackboneError) {
        let args = arguments.map { dnnl_exec_arg_t(arg: $0.0, memory: $0.1.memory) }
        try check(dnnl_primitive_execute(primitive, stream.stream, Int32(args.count), args), "dnnl_primitive_execute")
    }
}

/// Post-operations fused into a convolution (the residual sum, then the activation), and a
/// scratchpad the caller provides: oneDNN's own is per creating thread and shared between
/// primitives, so primitives run from other threads, or two networks at once, would corrupt it.
final class DNNLAttributes {
    let attributes: dnnl_primitive_attr_t

    init(sum: Bool = false, activation: Activation = .none) throws(BackboneError) {
        let postOps: dnnl_post_ops_t = try created("dnnl_post_ops_create") { dnnl_post_ops_create($0) }
        defer { dnnl_post_ops_destroy(postOps) }
        if sum { try check(dnnl_post_ops_append_sum(postOps, 1), "dnnl_post_ops_append_sum") }
        switch activation {
        case .none: break
        case .relu:
            try check(dnnl_post_ops_append_eltwise(postOps, 1, dnnl_eltwise_relu, 0, 0), "dnnl_post_ops_append_eltwise")
        case .relu6:
            try check(dnnl_post_ops_append_eltwise(postOps, 1, dnnl_eltwise_clip, 0, 6), "dnnl_post_ops_append_eltwise")
        }
        attributes = try created("dnnl_primitive_attr_create") { dnnl_primitive_attr_create($0) }
        try check(dnnl_primitive_attr_set_post_ops(attributes, postOps), "dnnl_primitive_attr_set_post_ops")
        try check(
            dnnl_primitive_attr_set_scratchpad_mode(attributes, dnnl_scratchpad_mode_user),
            "dnnl_primitive_attr_set_scratchpad_mode")
    }

    deinit { dnnl_primitive_attr_destroy(attributes) }
}

/// A primitive descriptor, destroyed with this value; `query` reads the layouts it chose.
final class DNNLPrimitiveDescriptor {
    let pd: dnnl_primitive_desc_t

    init(_ call: String, _ create: (UnsafeMutablePointer<dnnl_primitive_desc_t?>) -> dnnl_status_t)
        throws(BackboneError)
    {
        pd = try created(call, create)
    }

    deinit { dnnl_primitive_desc_destroy(pd) }

    func query(_ what: dnnl_query_t) throws(BackboneError) -> dnnl_memory_desc_t {
        guard let md = dnnl_primitive_desc_query_md(pd, what, 0) else {
            throw BackboneError(.engine(call: "dnnl_primitive_desc_query_md", detail: "no memory descriptor"))
        }
        return md.pointee
    }

    /// The implementation oneDNN picked, e.g. "brgconv_1x1:avx512_core".
    var implementation: String {
        var info: UnsafePointer<CChar>?
        guard dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &info) == dnnl_success, let info else {
            return "?"
        }
        return String(cString: info)
    }
}

extension DNNLPrimitiveDescriptor {
    /// A convolution over NHWC activations with weights in whatever layout oneDNN prefers.
    static func convolution(
        source: dnnl_memory_desc_t, weights: dnnl_memory_desc_t, bias: dnnl_memory_desc_t,
        destination: dnnl_memory_desc_t,
        stride: Int, padding: Program.Padding4, attributes: DNNLAttributes, winograd: Bool = false
    ) throws(BackboneError) -> DNNLPrimitiveDescriptor {
        let engine = try OneDNN.engine()
        var (source, weights, bias, destination) = (source, weights, bias, destination)
        var desc = dnnl_convolution_desc_t()
        let strides: [Int64] = [Int64(stride), Int64(stride)]
        let before: [Int64] = [Int64(padding.top), Int64(padding.left)]
        let after: [Int64] = [Int64(padding.bottom), Int64(padding.right)]
        try check(
            dnnl_convolution_forward_desc_init(
                &desc, dnnl_forward_inference,
                winograd ? dnnl_convolution_winograd : dnnl_convolution_direct,
                &source, &weights, &bias, &destination, strides, before, after),
            "dnnl_convolution_forward_desc_init")
        return try DNNLPrimitiveDescriptor("dnnl_primitive_desc_create (convolution)") {
            dnnl_primitive_desc_create($0, &desc, attributes.attributes, engine, nil)
        }
    }

    /// Max or average pooling over NHWC activations.
    static func pooling(
        _ algorithm: dnnl_alg_kind_t, source: dnnl_memory_desc_t, destination: dnnl_memory_desc_t,
        kernel: (Int, Int), stride: Int, padding: Program.Padding4
    ) throws(BackboneError) -> DNNLPrimitiveDescriptor {
        let engine = try OneDNN.engine()
        var (source, destination) = (source, destination)
        var desc = dnnl_pooling_desc_t()
        let strides: [Int64] = [Int64(stride), Int64(stride)]
        let kernel: [Int64] = [Int64(kernel.0), Int64(kernel.1)]
        let before: [Int64] = [Int64(padding.top), Int64(padding.left)]
        let after: [Int64] = [Int64(padding.bottom), Int64(padding.right)]
        try check(
            dnnl_pooling_forward_desc_init(
                &desc, dnnl_forward_inference, algorithm, &source, &destination,
                strides, kernel, before, after),
            "dnnl_pooling_forward_desc_init")
        let attributes = try DNNLAttributes()
        return try DNNLPrimitiveDescriptor("dnnl_primitive_desc_create (pooling)") {
            dnnl_primitive_desc_create($0, &desc, attributes.attributes, engine, nil)
        }
    }
}

// MARK: - The program's steps as primitives

/// A primitive with the memory it reads and writes.
struct DNNLStep {
    let primitive: DNNLPrimitive
    private(set) var arguments: [(Int32, DNNLMemory)]
    /// The implementation oneDNN picked, e.g. "brgconv_1x1:avx512_core".
    let implementation: String
    /// The scratch memory the primitive needs while it runs (nil: none), which the caller provides.
    let scratchpad: dnnl_memory_desc_t?

    private init(_ pd: DNNLPrimitiveDescriptor, _ arguments: [(Int32, DNNLMemory)]) throws(BackboneError) {
        primitive = try DNNLPrimitive(pd.pd)
        self.arguments = arguments
        implementation = pd.implementation
        var md = try pd.query(dnnl_query_scratchpad_md)
        scratchpad = dnnl_memory_desc_get_size(&md) > 0 ? md : nil
    }

    /// Bytes of scratch memory the primitive needs.
    var scratchpadBytes: Int {
        guard var md = scratchpad else { return 0 }
        return dnnl_memory_desc_get_size(&md)
    }

    /// The step with `buffer` (at least `scratchpadBytes` long, alive while the step is) as its scratchpad.
    func using(scratchpad buffer: UnsafeMutableRawPointer) throws(BackboneError) -> DNNLStep {
        guard let scratchpad else { return self }
        var step = self
        step.arguments.append((kith_dnnl_arg_scratchpad(), try DNNLMemory(scratchpad, buffer: buffer)))
        return step
    }

    func execute(on stream: DNNLStream) throws(BackboneError) {
        try primitive.execute(arguments, on: stream)
    }

    /// Copies `source` into `destination`, converting between their layouts.
    static func reorder(_ source: DNNLMemory, _ destination: DNNLMemory) throws(BackboneError) -> DNNLStep {
        let engine = try OneDNN.engine()
        var (from, to) = (source.descriptor.md, destination.descriptor.md)
        let attributes = try DNNLAttributes()
        let pd = try DNNLPrimitiveDescriptor("dnnl_reorder_primitive_desc_create") {
            dnnl_reorder_primitive_desc_create($0, &from, engine, &to, engine, attributes.attributes)
        }
        return try DNNLStep(pd, [(kith_dnnl_arg_from(), source), (kith_dnnl_arg_to(), destination)])
    }

    /// The convolution `c`, its weights reordered (once per layout, the cache's entry `key`) to
    /// the layout oneDNN chose; with `sum`, the output's previous contents (the residual) are added before the
    /// activation.
    static func convolution(
        _ c: Program.Convolution, input: DNNLMemory, output: DNNLMemory, sum: Bool,
        parameters: (cache: DNNLWeightCache, key: Int), stream: DNNLStream
    ) throws(BackboneError) -> DNNLStep {
        // oneDNN's weight dims are [out, in, ky, kx] (dense) or [groups, 1, 1, ky, kx]; the tags
        // say how Kith's arrays order them.
        let dims =
            c.depthwise ? [c.inChannels, 1, 1, c.kernel, c.kernel] : [c.outChannels, c.inChannels, c.kernel, c.kernel]
        let plain = try OneDNN.descriptor(dims, c.depthwise ? dnnl_hwigo : dnnl_hwio)
        let bias = try OneDNN.descriptor([c.outChannels], dnnl_x)
        let attributes = try DNNLAttributes(sum: sum, activation: c.activation)
        func descriptor(winograd: Bool) throws(BackboneError) -> DNNLPrimitiveDescriptor {
            try .convolution(
                source: input.descriptor.md, weights: OneDNN.descriptor(dims, dnnl_format_tag_any),
                bias: bias, destination: output.descriptor.md, stride: c.stride, padding: c.padding,
                attributes: attributes, winograd: winograd)
        }
        // Dense 3 × 3 convolutions of stride 1 (most of a ResNet) take Winograd's algorithm where
        // oneDNN has it: fewer multiplications for the same result within float rounding
        // (BENCHMARKS.md; the reference tests hold).
        let winograd = !c.depthwise && c.kernel == 3 && c.stride == 1
        let pd: DNNLPrimitiveDescriptor
        if winograd, let fast = try? descriptor(winograd: true) {
            pd = fast
        } else {
            pd = try descriptor(winograd: false)
        }
        let (cache, key) = parameters
        let weights = try cache.memory(
            2 * key, c.weights, plain: plain, as: pd.query(dnnl_query_weights_md), stream: stream)
        let biasMemory = try cache.memory(2 * key + 1, c.bias, plain: bias, as: bias, stream: stream)
        return try DNNLStep(
            pd,
            [
                (kith_dnnl_arg_src(), input), (kith_dnnl_arg_weights(), weights),
                (kith_dnnl_arg_bias(), biasMemory), (kith_dnnl_arg_dst(), output)
            ])
    }

    /// Max pooling (padding never wins) or, with `average`, the mean over each window.
    static func pooling(
        average: Bool, input: DNNLMemory, output: DNNLMemory,
        kernel: (Int, Int), stride: Int, padding: Program.Padding4
    ) throws(BackboneError) -> DNNLStep {
        let pd = try DNNLPrimitiveDescriptor.pooling(
            average ? dnnl_pooling_avg_exclude_padding : dnnl_pooling_max,
            source: input.descriptor.md, destination: output.descriptor.md, kernel: kernel, stride: stride,
            padding: padding)
        return try DNNLStep(pd, [(kith_dnnl_arg_src(), input), (kith_dnnl_arg_dst(), output)])
    }
}
