package autoscale

import "math"

// kalman is Dynamo planner's Kalman load predictor (components/src/dynamo/planner/core/load/predictors.py,
// KalmanPredictor): a local linear trend, level and trend, observed one value per adjustment interval
// and forecasting the next interval's level. Its defaults are Dynamo's (planner_config.py): process
// noise 1.0 on the level and 0.1 on the trend, measurement noise 10, an initial covariance of 1000, raw
// values (no log1p), and the last observation returned until 5 points are in. Leading zeros (an idle
// start) are skipped, as Dynamo's BasePredictor does.
type kalman struct {
	qLevel, qTrend, r float64
	minPoints         int

	n            int
	level, trend float64
	p            [2][2]float64
	last         float64
}

func newKalman() *kalman {
	return &kalman{qLevel: 1.0, qTrend: 0.1, r: 10, minPoints: 5}
}

// observe feeds one interval's value and returns the forecast for the next interval.
func (k *kalman) observe(z float64) float64 {
	if math.IsNaN(z) || math.IsInf(z, 0) {
		z = 0
	}
	if z == 0 && k.n == 0 {
		return 0
	}
	k.last = z
	if k.n == 0 {
		k.level, k.trend = z, 0
		k.p = [2][2]float64{{1000, 0}, {0, 1000}}
	} else {
		k.predict()
		// Update with the observed level (H = [1, 0]).
		s := k.p[0][0] + k.r
		g0, g1 := k.p[0][0]/s, k.p[1][0]/s
		y := z - k.level
		k.level += g0 * y
		k.trend += g1 * y
		p := k.p
		k.p[0][0] = (1 - g0) * p[0][0]
		k.p[0][1] = (1 - g0) * p[0][1]
		k.p[1][0] = p[1][0] - g1*p[0][0]
		k.p[1][1] = p[1][1] - g1*p[0][1]
	}
	k.n++
	if k.n < k.minPoints {
		return z
	}
	// One step ahead: the predicted level, level + trend, without advancing the filter.
	return math.Max(0, k.level+k.trend)
}

// predict advances the state one interval: level += trend, P = F P Fᵀ + Q with F = [[1, 1], [0, 1]].
func (k *kalman) predict() {
	k.level += k.trend
	p := k.p
	k.p[0][0] = p[0][0] + p[0][1] + p[1][0] + p[1][1] + k.qLevel
	k.p[0][1] = p[0][1] + p[1][1]
	k.p[1][0] = p[1][0] + p[1][1]
	k.p[1][1] = p[1][1] + k.qTrend
}
