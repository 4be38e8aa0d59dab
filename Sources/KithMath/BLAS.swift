import CBLAS
import CDNNL

/// The linear algebra Kith computes with: OpenBLAS, except for products of float matrices,
/// which oneDNN's sgemm computes (its kernels are generated for the CPU it finds: AVX-512 where
/// there is one, which OpenBLAS 0.3.21 does not use on AMD's Zen 4 and 5; docs/encoder.md).
/// Every BLAS call in Kith, and oneDNN's sgemm, go through here.
public enum BLAS {
    /// Sets how many threads one call may use. Where requests already run in parallel, one
    /// thread per call is usually faster than two on a busy 2-core machine.
    public static func setThreads(_ count: Int) {
        openblas_set_num_threads(Int32(max(1, count)))
    }

    /// The number of threads one call currently uses.
    public static var threads: Int { Int(openblas_get_num_threads()) }

    /// C = alpha · op(A) · op(B) + beta · C for row-major op(A) (m × k), op(B) (k × n) and C (m × n).
    /// With `transposeA`, `a` holds A as k × m rows; with `transposeB`, `b` holds B as n × k rows.
    public static func gemm(
        m: Int, n: Int, k: Int,
        a: UnsafePointer<Float>, lda: Int, transposeA: Bool = false,
        b: UnsafePointer<Float>, ldb: Int, transposeB: Bool = false,
        c: UnsafeMutablePointer<Float>, ldc: Int,
        alpha: Float = 1, beta: Float = 0
    ) {
        precondition(m >= 0 && n >= 0 && k >= 0, "gemm: negative dimension")
        guard m > 0, n > 0 else { return }
        guard k > 0 else {
            for i in 0..<m { for j in 0..<n { c[i * ldc + j] = beta == 0 ? 0 : beta * c[i * ldc + j] } }
            return
        }
        // oneDNN runs on OpenMP: the calling thread's next parallel region gets the threads
        // set for one call.
        _ = kith_omp_set_num_threads(Int32(threads))
        let status = dnnl_sgemm(
            transposeA ? transposed : plain, transposeB ? transposed : plain, Int64(m), Int64(n), Int64(k),
            alpha, a, Int64(lda), b, Int64(ldb), beta, c, Int64(ldc))
        // It fails only on arguments that contradict each other, which the callers' shapes rule out.
        precondition(status == dnnl_success, "dnnl_sgemm: status \(status.rawValue) for \(m) x \(n) x \(k)")
    }

    private static let (plain, transposed) = (CChar(UInt8(ascii: "N")), CChar(UInt8(ascii: "T")))

    /// C = (A − aOffset) · Bᵀ in 32-bit integer sums, for row-major A (m × k, unsigned bytes),
    /// B (n × k, signed bytes) and C (m × n): oneDNN's `dnnl_gemm_u8s8s32`. Where the CPU has no
    /// VNNI, each pair of byte products A·B is first summed in 16 bits with saturation: the sums
    /// are exact on every CPU when 2 · max A · max |B| ≤ 32,767.
    public static func gemm(
        m: Int, n: Int, k: Int, a: UnsafePointer<UInt8>, lda: Int, aOffset: UInt8 = 0, b: UnsafePointer<Int8>, ldb: Int,
        c: UnsafeMutablePointer<Int32>, ldc: Int
    ) {
        precondition(m >= 0 && n >= 0 && k >= 0, "gemm: negative dimension")
        guard m > 0, n > 0 else { return }
        guard k > 0 else {
            for i in 0..<m { for j in 0..<n { c[i * ldc + j] = 0 } }
            return
        }
        _ = kith_omp_set_num_threads(Int32(threads))
        var offset: Int32 = 0
        let status = dnnl_gemm_u8s8s32(
            plain, transposed, CChar(UInt8(ascii: "F")), Int64(m), Int64(n), Int64(k), 1, a, Int64(lda), aOffset,
            b, Int64(ldb), 0, 0, c, Int64(ldc), &offset)
        precondition(status == dnnl_success, "dnnl_gemm_u8s8s32: status \(status.rawValue) for \(m) x \(n) x \(k)")
    }

    /// `gemm` in double precision, for small problems that need it (fitting heads by gradients).
    public static func gemm(
        m: Int, n: Int, k: Int,
        a: UnsafePointer<Double>, lda: Int, transposeA: Bool = false,
        b: UnsafePointer<Double>, ldb: Int, transposeB: Bool = false,
        c: UnsafeMutablePointer<Double>, ldc: Int,
        alpha: Double = 1, beta: Double = 0
    ) {
        precondition(m >= 0 && n >= 0 && k >= 0, "gemm: negative dimension")
        guard m > 0, n > 0 else { return }
        cblas_dgemm(
            CblasRowMajor, transposeA ? CblasTrans : CblasNoTrans, transposeB ? CblasTrans : CblasNoTrans,
            Int32(m), Int32(n), Int32(k), alpha, a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }

    /// x · y over `n` values.
    public static func dot(_ n: Int, _ x: UnsafePointer<Float>, _ y: UnsafePointer<Float>) -> Float {
        n > 0 ? cblas_sdot(Int32(n), x, 1, y, 1) : 0
    }

    /// y = A · x for row-major A (m × n): one query against many rows without packing them, as a
    /// one-row gemm would.
    public static func gemv(
        m: Int, n: Int, a: UnsafePointer<Float>, lda: Int, x: UnsafePointer<Float>, y: UnsafeMutablePointer<Float>
    ) {
        guard m > 0, n > 0 else { return }
        cblas_sgemv(CblasRowMajor, CblasNoTrans, Int32(m), Int32(n), 1, a, Int32(lda), x, 1, 0, y, 1)
    }
}

/// LAPACK, as OpenBLAS exports it.
public enum LAPACK {
    /// The eigenvalues (ascending) and unit eigenvectors of a symmetric n × n matrix (row-major,
    /// double; only its lower triangle is read): `vectors` is row-major n × n, row j the
    /// eigenvector of `values[j]`. nil when LAPACK's `dsyevd` does not converge (info > 0).
    public static func symmetricEigen(_ matrix: [Double], n: Int) -> (values: [Double], vectors: [Double])? {
        precondition(matrix.count == n * n && n > 0, "symmetricEigen: \(matrix.count) values for \(n) x \(n)")
        // Row-major symmetric is column-major symmetric: LAPACK's upper triangle is our lower one.
        var a = matrix, w = [Double](repeating: 0, count: n)
        var n32 = Int32(n), info: Int32 = 0, lwork: Int32 = -1, liwork: Int32 = -1
        var workSize = 0.0, iworkSize: Int32 = 0
        let (jobz, uplo) = (CChar(UInt8(ascii: "V")), CChar(UInt8(ascii: "U")))
        dsyevd_([jobz], [uplo], &n32, &a, &n32, &w, &workSize, &lwork, &iworkSize, &liwork, &info)
        guard info == 0 else { return nil }
        lwork = Int32(workSize)
        liwork = iworkSize
        var work = [Double](repeating: 0, count: Int(lwork)), iwork = [Int32](repeating: 0, count: Int(liwork))
        dsyevd_([jobz], [uplo], &n32, &a, &n32, &w, &work, &lwork, &iwork, &liwork, &info)
        // info < 0 names a bad argument, which the shapes above rule out.
        precondition(info >= 0, "dsyevd: argument \(-info) is invalid")
        guard info == 0 else { return nil }
        // Column-major eigenvectors (column j for w[j]) read row-major are the rows we want.
        return (w, a)
    }
}
