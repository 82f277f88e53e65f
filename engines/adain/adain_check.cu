// Checks the AdaIN kernel against a float64 CPU reference and times it; run on a machine with an
// NVIDIA GPU: build/adain_check [N C H W]. Exit status 0 when max error is within tolerance.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <vector>

#include "adain.h"

#define CHECK(call) do { cudaError_t e = (call); if (e != cudaSuccess) { \
    std::fprintf(stderr, "%s failed: %s\n", #call, cudaGetErrorString(e)); return 2; } } while (0)

int main(int argc, char** argv) {
    const int n = argc > 4 ? std::atoi(argv[1]) : 2, c = argc > 4 ? std::atoi(argv[2]) : 256;
    const int h = argc > 4 ? std::atoi(argv[3]) : 64, w = argc > 4 ? std::atoi(argv[4]) : 64;
    const int hw = h * w;
    const float eps = 1e-5f, slope = 0.2f;
    std::mt19937 rng(0);
    std::normal_distribution<float> normal(0.f, 1.f);
    std::vector<float> x(size_t(n) * c * hw), gamma(n * c), beta(n * c), y(x.size());
    for (auto& v : x) v = 3.f * normal(rng) + 0.5f;
    for (auto& v : gamma) v = 0.3f * normal(rng);
    for (auto& v : beta) v = 0.3f * normal(rng);

    float *dx, *dg, *db, *dy;
    CHECK(cudaMalloc(&dx, x.size() * 4)); CHECK(cudaMalloc(&dy, x.size() * 4));
    CHECK(cudaMalloc(&dg, gamma.size() * 4)); CHECK(cudaMalloc(&db, beta.size() * 4));
    CHECK(cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(dg, gamma.data(), gamma.size() * 4, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(db, beta.data(), beta.size() * 4, cudaMemcpyHostToDevice));
    CHECK(stargan_adain_forward_f32(dx, dg, db, dy, n, c, hw, eps, 1, slope, 0));
    CHECK(cudaMemcpy(y.data(), dy, y.size() * 4, cudaMemcpyDeviceToHost));

    double max_err = 0;
    for (int p = 0; p < n * c; ++p) {
        double mean = 0, var = 0;
        for (int i = 0; i < hw; ++i) mean += x[size_t(p) * hw + i];
        mean /= hw;
        for (int i = 0; i < hw; ++i) { double d = x[size_t(p) * hw + i] - mean; var += d * d; }
        var /= hw;
        for (int i = 0; i < hw; ++i) {
            double v = (1 + gamma[p]) * (x[size_t(p) * hw + i] - mean) / std::sqrt(var + eps) + beta[p];
            if (v < 0) v *= slope;
            max_err = std::fmax(max_err, std::fabs(v - y[size_t(p) * hw + i]));
        }
    }
    cudaEvent_t start, stop;
    CHECK(cudaEventCreate(&start)); CHECK(cudaEventCreate(&stop));
    const int reps = 200;
    CHECK(cudaEventRecord(start));
    for (int r = 0; r < reps; ++r) CHECK(stargan_adain_forward_f32(dx, dg, db, dy, n, c, hw, eps, 1, slope, 0));
    CHECK(cudaEventRecord(stop)); CHECK(cudaEventSynchronize(stop));
    float ms = 0; CHECK(cudaEventElapsedTime(&ms, start, stop));
    const double gbps = 2.0 * x.size() * 4 / (ms / reps * 1e-3) / 1e9;
    std::printf("adain f32 N=%d C=%d H=%d W=%d: max abs error %.3g, %.4f ms/call, %.1f GB/s\n",
                n, c, h, w, max_err, ms / reps, gbps);
    cudaFree(dx); cudaFree(dy); cudaFree(dg); cudaFree(db);
    return max_err < 1e-4 ? 0 : 1;
}
