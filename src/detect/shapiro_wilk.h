// detect/shapiro_wilk.h — the Shapiro-Wilk test of normality, as PRADA (detect/extraction.h) uses
// it. Written here because no Debian-packaged C or C++ library offers it (GSL, Boost.Math and
// libRmath have none; R's copy lives inside R's stats package, not a library one can link).
//
// The algorithm is Royston's AS R94 (Applied Statistics 44(4), 1995): the coefficients from the
// expected normal order statistics m_i = Phi^-1((i - 3/8) / (n + 1/4)) with Royston's polynomial
// corrections for the two outermost, W as the squared correlation between the coefficients and
// the sorted sample, and the p-value from Royston's normalising transformation of W (n <= 11: a
// log transform; n >= 12: log(1 - W) is normal with mean and sd polynomial in log n). It is the
// routine scipy.stats.shapiro and R's shapiro.test wrap; tests/detect/extraction_test.cpp holds
// it to scipy's values (tests/fixtures/shapiro_wilk_golden.py).
#pragma once

#include <vector>

namespace bulwark::detect {

struct ShapiroWilk {
  double w = 1;        // in (0, 1]; 1 = a perfectly normal-looking sample
  double p_value = 1;  // of normality; small = not normal
};

// The test of x (3..5000 values, as AS R94 allows; any order). Throws invalid_argument for fewer
// than 3 or more than 5000 values, a non-finite value, or a sample of zero range (all equal).
ShapiroWilk shapiro_wilk(std::vector<double> x);

// The standard normal quantile Phi^-1(p) for p in (0, 1) (Acklam's rational approximation refined
// by one Halley step on erfc: ~1e-15 relative). NaN outside (0, 1).
double normal_quantile(double p);

}  // namespace bulwark::detect
