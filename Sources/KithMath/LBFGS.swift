/// Limited-memory BFGS (Nocedal & Wright, algorithm 7.4) with a backtracking Armijo line search,
/// for smooth convex objectives.
public enum LBFGS {
    /// The minimiser of `objective` (which returns f(x) and writes ∇f(x) into its second
    /// argument) from `start`: stops when every gradient component is at most
    /// `gradientTolerance`, when a step no longer lowers f, or after `maxIterations`.
    public static func minimize(
        start: [Double], gradientTolerance: Double, maxIterations: Int, memory: Int = 10,
        objective: ([Double], inout [Double]) -> Double
    ) -> [Double] {
        let size = start.count
        var x = start
        var g = [Double](repeating: 0, count: size)
        var f = objective(x, &g)
        var s: [[Double]] = [], y: [[Double]] = [], rho: [Double] = []
        var newX = x, newG = g
        for iteration in 0..<maxIterations {
            if g.lazy.map(abs).max() ?? 0 <= gradientTolerance { break }
            // Two-loop recursion: direction = −H·g.
            var q = g
            var alpha = [Double](repeating: 0, count: s.count)
            for i in stride(from: s.count - 1, through: 0, by: -1) {
                alpha[i] = rho[i] * dot(s[i], q)
                for j in 0..<size { q[j] -= alpha[i] * y[i][j] }
            }
            let gamma = s.isEmpty ? 1 / max(norm(g), 1e-12) : dot(s.last!, y.last!) / dot(y.last!, y.last!)
            for j in 0..<size { q[j] *= gamma }
            for i in 0..<s.count {
                let beta = rho[i] * dot(y[i], q)
                for j in 0..<size { q[j] += s[i][j] * (alpha[i] - beta) }
            }
            var slope = -dot(g, q)
            if slope >= 0 {  // not a descent direction: restart from steepest descent
                s.removeAll(); y.removeAll(); rho.removeAll()
                q = g.map { $0 / max(norm(g), 1e-12) }
                slope = -dot(g, q)
            }
            // Backtracking until f(x + t·d) ≤ f(x) + 1e-4·t·slope.
            var step = 1.0, newF = f, accepted = false
            for _ in 0..<60 {
                for j in 0..<size { newX[j] = x[j] - step * q[j] }
                newF = objective(newX, &newG)
                if newF <= f + 1e-4 * step * slope { accepted = true; break }
                step *= 0.5
            }
            guard accepted else { break }
            var sk = s.count == memory ? s.removeFirst() : [Double](repeating: 0, count: size)
            var yk = y.count == memory ? y.removeFirst() : [Double](repeating: 0, count: size)
            if rho.count == memory { rho.removeFirst() }
            for j in 0..<size {
                sk[j] = newX[j] - x[j]
                yk[j] = newG[j] - g[j]
            }
            let curvature = dot(sk, yk)
            if curvature > 1e-12 * dot(yk, yk) {
                s.append(sk); y.append(yk); rho.append(1 / curvature)
            }
            let improvement = f - newF
            (x, g, f) = (newX, newG, newF)
            if improvement <= 1e-15 * max(abs(f), 1) && iteration > 0 { break }
        }
        return x
    }

    private static func dot(_ a: [Double], _ b: [Double]) -> Double {
        var total = 0.0
        for i in a.indices { total += a[i] * b[i] }
        return total
    }

    private static func norm(_ a: [Double]) -> Double { dot(a, a).squareRoot() }
}
