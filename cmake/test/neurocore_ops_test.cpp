// Calls every neurocore op through the c10 dispatcher, as any libtorch program or TorchScript would,
// and checks each result against plain ATen computations of the same formula (ALGORITHMS.md; the
// Python twins in neurocore/reference.py). Exit code 0 = all checks passed.
#include <ATen/ATen.h>
#include <ATen/core/dispatch/Dispatcher.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <tuple>

namespace {

int failures = 0;

void check(bool ok, const std::string& what) {
  std::printf("%s %s\n", ok ? "ok  " : "FAIL", what.c_str());
  if (!ok) ++failures;
}

bool close(const at::Tensor& a, const at::Tensor& b, double tol = 1e-10) {
  return a.sizes() == b.sizes() && at::allclose(a.to(at::kDouble), b.to(at::kDouble), tol, tol);
}

template <typename Signature>
c10::TypedOperatorHandle<Signature> op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

void test_topk() {
  auto topk = op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, int64_t)>("neurocore::topk");
  auto x = at::tensor({1., 5., 3., 5., 2., 0.}, at::kFloat).view({3, 2});
  auto [values, indices] = topk.call(x, 2);
  check(close(values, at::tensor({3., 5., 2., 5.}).view({2, 2})), "topk values (ties: lower row first)");
  check(at::equal(indices, at::tensor({1, 0, 2, 1}, at::kLong).view({2, 2})), "topk indices");
  auto r = at::randn({500, 7}, at::kDouble);
  auto [v2, i2] = topk.call(r, 20);
  auto sorted = std::get<0>(at::sort(r, 0, /*descending=*/true));
  check(close(v2, sorted.slice(0, 0, 20)), "topk equals a descending sort's first rows");
  check(at::equal(r.gather(0, i2), v2), "topk indices point at the values");
}

void test_topk_merge() {
  auto topk = op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, int64_t)>("neurocore::topk");
  auto merge = op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, const at::Tensor&, const at::Tensor&,
                                                     const at::Tensor&, int64_t)>("neurocore::topk_merge");
  auto x = at::randn({60, 5});
  auto [va, ia] = topk.call(x.slice(0, 0, 25), 8);
  auto [vb, ib] = topk.call(x.slice(0, 25, 60), 8);
  auto [v, i] = merge.call(va, ia, vb, ib + 25, 8);
  auto [v_all, i_all] = topk.call(x, 8);
  check(at::equal(v, v_all) && at::equal(i, i_all), "topk_merge of two chunks equals topk of all rows");
}

void test_soft_wpmi() {
  auto topk = op<std::tuple<at::Tensor, at::Tensor>(const at::Tensor&, int64_t)>("neurocore::topk");
  auto soft_wpmi = op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, double, double, double)>(
      "neurocore::soft_wpmi");
  const int64_t N = 80, M = 9, K = 6, k = 10;
  const double a = 10, lam = 1, eps = 1e-7;
  auto sims = at::rand({N, M}, at::kDouble) * 0.3;
  auto idx = std::get<1>(topk.call(at::randn({N, K}), k));
  auto p = 0.998 - at::arange(k, at::kDouble) / k * (0.998 - 0.97);
  auto out = soft_wpmi.call(sims, idx, p, a, lam, eps);
  // the formula (paper eq. 14): L[j, m] = sum_i log(1 + p_i (P[x_ij, m] - 1) + eps), minus the marginal
  auto P = at::softmax(a * sims, 1);
  auto gathered = P.index_select(0, idx.reshape(-1)).view({k, K, M});
  auto L = at::log(1 + p.view({k, 1, 1}) * (gathered - 1) + eps).sum(0);
  auto expected = L - lam * (at::logsumexp(L, {0}, true) - std::log(double(K)));
  check(close(out, expected, 1e-9), "soft_wpmi equals the SoftWPMI formula (float64)");
}

void test_lstsq_gram() {
  auto lstsq = op<std::tuple<at::Tensor, at::Tensor, at::Tensor>(
      const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
      const at::Tensor&, const at::Tensor&, double)>("neurocore::lstsq_gram");
  // y = 2 P0 - P2 + 0.5 exactly: the set {0, 2} must give weights (2, -1), bias 0.5, correlation 1
  auto P = at::randn({200, 4}, at::kDouble);
  auto Y = (2 * P.select(1, 0) - P.select(1, 2) + 0.5).unsqueeze(1);
  auto stats = [](const at::Tensor& p, const at::Tensor& y) {
    auto mean = p.mean(0), target_mean = y.mean(0);
    auto pc = p - mean, yc = y - target_mean;
    const double n = double(p.size(0));
    return std::make_tuple(mean, pc.t().mm(pc) / n, target_mean, pc.t().mm(yc) / n, (yc * yc).sum(0) / n);
  };
  auto [mean_t, cov_t, tmean_t, cross_t, tvar_t] = stats(P.slice(0, 0, 150), Y.slice(0, 0, 150));
  auto [mean_v, cov_v, tmean_v, cross_v, tvar_v] = stats(P.slice(0, 150), Y.slice(0, 150));
  auto sets = at::tensor({0, 2, 1, -1}, at::kLong).view({1, 2, 2});
  auto [w, b, corr] = lstsq.call(cov_t, mean_t, cross_t, tmean_t, cov_v, cross_v, tvar_v, sets, 1e-10);
  check(close(w[0][0], at::tensor({2., -1.}), 1e-6) && std::abs(b[0][0].item<double>() - 0.5) < 1e-6,
        "lstsq_gram recovers the planted weights and intercept");
  check(std::abs(corr[0][0].item<double>() - 1) < 1e-9, "lstsq_gram: validation correlation 1 for the planted set");
  check(corr[0][1].item<double>() < 0.9, "lstsq_gram: a wrong set correlates less");
}

void test_shapley() {
  auto shapley = op<at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                               const at::Tensor&, c10::string_view)>("neurocore::shapley_permutation");
  const int64_t R = 4, C = 3, D = 6;
  auto x = at::randn({R, D}, at::kDouble), bg = at::randn({R, D}, at::kDouble);
  auto w = at::randn({C, D}, at::kDouble), b = at::randn({C}, at::kDouble);
  auto perms = at::argsort(at::rand({16, D}), /*dim=*/int64_t{1});
  auto phi = shapley.call(x, w, b, bg, perms, "identity");
  check(close(phi, w.unsqueeze(0) * (x - bg).unsqueeze(1)), "shapley identity link: w * (x - background), exact");
  auto phi_s = shapley.call(x, w, b, bg, perms, "softmax");
  auto f = [&](const at::Tensor& z) { return at::softmax(z.mm(w.t()) + b, 1); };
  check(close(phi_s.sum(-1), f(x) - f(bg), 1e-9), "shapley softmax link: contributions sum to f(x) - f(background)");
  bool threw = false;
  try {
    shapley.call(x, w, b, bg, perms, "tanh");
  } catch (const c10::Error&) {
    threw = true;
  }
  check(threw, "shapley rejects an unknown link");
}

}  // namespace

int main() {
  at::manual_seed(0);
  for (const char* name : {"neurocore::topk", "neurocore::topk_merge", "neurocore::soft_wpmi", "neurocore::lstsq_gram",
                           "neurocore::shapley_permutation"}) {
    check(c10::Dispatcher::singleton().findSchema({name, ""}).has_value(), std::string("schema registered: ") + name);
  }
  test_topk();
  test_topk_merge();
  test_soft_wpmi();
  test_lstsq_gram();
  test_shapley();
  std::printf("%d failed\n", failures);
  return failures == 0 ? 0 : 1;
}
