#include "detect/shapiro_wilk.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>

#include "core/error.h"

namespace bulwark::detect {
namespace {

// c[0] + c[1] x + ... + c[n-1] x^(n-1), as AS R94's poly().
double poly(const double* c, int n, double x) {
  double r = 0;
  for (int i = n - 1; i >= 0; --i) r = r * x + c[i];
  return r;
}

double normal_upper_tail(double z) { return 0.5 * std::erfc(z / std::sqrt(2.0)); }

}  // namespace

double normal_quantile(double p) {
  if (!(p > 0 && p < 1)) return std::numeric_limits<double>::quiet_NaN();
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                             1.383577518672690e+02,  -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                             6.680131188771972e+01, -1.328068155288572e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                             -2.549732539343734e+00, 4.374664141464968e+00,  2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                             3.754408661907416e+00};
  constexpr double kLow = 0.02425;
  double x;
  if (p < kLow || p > 1 - kLow) {
    const double q = std::sqrt(-2 * std::log(p < kLow ? p : 1 - p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
    if (p > 1 - kLow) x = -x;
  } else {
    const double q = p - 0.5, r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  }
  // One Halley step on Phi(x) - p, with Phi from erfc (accurate in both tails).
  const double e = 0.5 * std::erfc(-x / std::sqrt(2.0)) - p;
  const double u = e * std::sqrt(2 * M_PI) * std::exp(x * x / 2);
  return x - u / (1 + x * u / 2);
}

ShapiroWilk shapiro_wilk(std::vector<double> x) {
  const int n = static_cast<int>(x.size());
  if (x.size() < 3 || x.size() > 5000) {
    throw invalid_argument("shapiro_wilk: needs 3..5000 values, got " + std::to_string(x.size()));
  }
  for (double v : x) {
    if (!std::isfinite(v)) throw invalid_argument("shapiro_wilk: a value is not finite");
  }
  std::sort(x.begin(), x.end());
  if (!(x.back() - x.front() > 1e-19 * std::max(1.0, std::fabs(x.back())))) {
    throw invalid_argument("shapiro_wilk: all values are equal (zero range)");
  }
  // Royston's coefficients for the lower half (by symmetry the upper half is their negation).
  static const double c1[] = {0.0, 0.221157, -0.147981, -2.071190, 4.434685, -2.706056};
  static const double c2[] = {0.0, 0.042981, -0.293762, -1.752461, 5.682633, -3.582633};
  const int half = n / 2;
  std::vector<double> a(static_cast<size_t>(half));
  const double an = n;
  if (n == 3) {
    a[0] = std::sqrt(0.5);
  } else {
    std::vector<double> m(static_cast<size_t>(half));
    double summ2 = 0;
    for (int i = 0; i < half; ++i) {
      m[i] = -normal_quantile((i + 1 - 0.375) / (an + 0.25));  // positive: the upper order statistics
      summ2 += m[i] * m[i];
    }
    summ2 *= 2;
    const double ssumm2 = std::sqrt(summ2), rsn = 1 / std::sqrt(an);
    // AS R94's m_i are the lower (negative) quantiles; these are their magnitudes, hence the signs.
    const double a1 = poly(c1, 6, rsn) + m[0] / ssumm2;
    int first = 1;
    double fac;
    if (n > 5) {
      const double a2 = m[1] / ssumm2 + poly(c2, 6, rsn);
      fac = std::sqrt((summ2 - 2 * m[0] * m[0] - 2 * m[1] * m[1]) / (1 - 2 * a1 * a1 - 2 * a2 * a2));
      a[1] = a2;
      first = 2;
    } else {
      fac = std::sqrt((summ2 - 2 * m[0] * m[0]) / (1 - 2 * a1 * a1));
    }
    a[0] = a1;
    for (int i = first; i < half; ++i) a[i] = m[i] / fac;
  }
  // W: the squared correlation between the sorted sample and the (antisymmetric) coefficients,
  // written as 1 - (1 - r^2) so that W near 1 keeps its digits.
  double mean = 0;
  for (double v : x) mean += v;
  mean /= an;
  double ssa = 0, ssx = 0, sax = 0;
  for (int i = 0; i < n; ++i) {
    const int j = n - 1 - i;
    const double coef = i == j ? 0.0 : (i < j ? -a[i] : a[j]);  // a[] > 0: low values get -a[i], high a[j]
    const double dx = x[i] - mean;
    ssa += coef * coef;
    ssx += dx * dx;
    sax += coef * dx;
  }
  const double root = std::sqrt(ssa * ssx);
  ShapiroWilk r;
  r.w = 1 - (root - sax) * (root + sax) / (ssa * ssx);
  if (n == 3) {  // the exact distribution
    r.p_value = std::max(0.0, 1.90985931710274 * (std::asin(std::sqrt(r.w)) - 1.04719755119660));
    return r;
  }
  static const double g[] = {-2.273, 0.459};
  static const double c3[] = {0.5440, -0.39978, 0.025054, -6.714e-4};
  static const double c4[] = {1.3822, -0.77857, 0.062767, -0.0020322};
  static const double c5[] = {-1.5861, -0.31082, -0.083751, 0.0038915};
  static const double c6[] = {-0.4803, -0.082676, 0.0030302};
  double y = std::log(1 - r.w), mu, sd;
  if (n <= 11) {
    const double gamma = poly(g, 2, an);
    if (y >= gamma) {
      r.p_value = 1e-99;
      return r;
    }
    y = -std::log(gamma - y);
    mu = poly(c3, 4, an);
    sd = std::exp(poly(c4, 4, an));
  } else {
    const double ln = std::log(an);
    mu = poly(c5, 4, ln);
    sd = std::exp(poly(c6, 3, ln));
  }
  r.p_value = normal_upper_tail((y - mu) / sd);
  return r;
}

}  // namespace bulwark::detect
