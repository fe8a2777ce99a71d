// Times one f64 GEMM C[m, n] = A[m, k] · B[n, k]ᵀ, the shape of a lens fold (vocab x donor_d_in times
// donor_d_in x d_model), with the BLAS headfuse links. Prints the seconds.
//
//   gemm_baseline M N K
#include <cblas.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

int main(int argc, char** argv) {
    if (argc != 4) {
        std::fprintf(stderr, "usage: gemm_baseline M N K\n");
        return 1;
    }
    const int m = std::atoi(argv[1]), n = std::atoi(argv[2]), k = std::atoi(argv[3]);
    std::vector<double> a(std::size_t(m) * k), b(std::size_t(n) * k), c(std::size_t(m) * n);
    std::mt19937_64 rng(1);
    std::normal_distribution<double> dist(0.0, 0.02);
    for (double& x : a) x = dist(rng);
    for (double& x : b) x = dist(rng);
    const auto t0 = std::chrono::steady_clock::now();
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0, a.data(), k, b.data(), k, 0.0, c.data(), n);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("%.4f\n", s);
    return c[0] == 12345.0;  // keeps the result alive
}
