package eval

import (
	"fmt"
	"image/color"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
)

var (
	blue   = color.RGBA{31, 119, 180, 255}
	orange = color.RGBA{255, 127, 14, 255}
	green  = color.RGBA{44, 160, 44, 255}
	grey   = color.RGBA{150, 150, 150, 255}
	red    = color.RGBA{214, 39, 40, 255}
)

// Plot writes two PNGs per report, with one panel per policy's chosen tuning: prompt load against
// Ready prefill and decode instances (and converted decoders), and TTFT p50/p99 over time against the
// SLO. It returns the files written.
func (r *Report) Plot(prefix string) ([]string, error) {
	if len(r.Chosen) == 0 {
		return nil, nil
	}
	inst := prefix + "-instances.png"
	ttft := prefix + "-ttft.png"
	if err := r.grid(inst, r.instancePanel); err != nil {
		return nil, err
	}
	if err := r.grid(ttft, r.ttftPanel); err != nil {
		return nil, err
	}
	front := prefix + "-frontier.png"
	if err := r.frontierPlot(front); err != nil {
		return nil, err
	}
	return []string{inst, ttft, front}, nil
}

// frontierPlot draws every policy's frontier, GPU-hours against joint attainment on the scored window,
// each point marked and the lower convex hull the cost at T is read from drawn as the line, with the
// target and the ceiling marked.
func (r *Report) frontierPlot(file string) error {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s: cost against joint SLO attainment (T %.1f%%, ceiling %.1f%%)", r.Trace, 100*r.Target, 100*r.Ceiling)
	p.X.Label.Text = "joint SLO attainment (%)"
	p.Y.Label.Text = "GPU-hours"
	hi := 100 * r.Ceiling
	ymax := 0.0
	for i, c := range r.Chosen {
		if len(c.Frontier) == 0 {
			continue
		}
		pts := make(plotter.XYs, len(c.Frontier))
		for k, f := range c.Frontier {
			pts[k] = plotter.XY{X: 100 * f.JointAttainment, Y: f.GPUHours}
			ymax = math.Max(ymax, f.GPUHours)
		}
		hull := Hull(c.Frontier)
		hpts := make(plotter.XYs, len(hull))
		for k, f := range hull {
			hpts[k] = plotter.XY{X: 100 * f.JointAttainment, Y: f.GPUHours}
		}
		l, err := plotter.NewLine(hpts)
		if err != nil {
			return err
		}
		sc, err := plotter.NewScatter(pts)
		if err != nil {
			return err
		}
		col := plotutil.Color(i)
		l.Color, sc.Color = col, col
		l.Dashes = plotutil.Dashes(i / len(plotutil.DefaultColors))
		sc.Shape = plotutil.Shape(i)
		p.Add(l, sc)
		p.Legend.Add(c.Policy, l, sc)
	}
	for _, m := range []struct {
		x float64
		c color.Color
	}{{100 * r.Target, red}, {100 * r.Ceiling, grey}} {
		l, err := plotter.NewLine(plotter.XYs{{X: m.x, Y: 0}, {X: m.x, Y: math.Max(ymax, 1e-3)}})
		if err != nil {
			return err
		}
		l.Color = m.c
		l.Dashes = []vg.Length{vg.Points(4), vg.Points(2)}
		p.Add(l)
	}
	p.Legend.Top, p.Legend.Left = true, true
	// Zoom on the region around the target: 20 points below it to the ceiling, and up to 3× the
	// dearest cost at T (lines beyond are clipped).
	p.X.Min = math.Max(0, 100*r.Target-20)
	p.X.Max = math.Min(100, hi) + 0.5
	top := 0.0
	for _, c := range r.Chosen {
		if c.CostAtTarget != nil {
			top = math.Max(top, *c.CostAtTarget)
		}
	}
	if top > 0 {
		p.Y.Min, p.Y.Max = 0, math.Min(ymax, 3*top)
	}
	img := vgimg.New(9*vg.Inch, 6*vg.Inch)
	p.Draw(draw.New(img))
	return saveImage(img, file)
}

func (r *Report) grid(file string, panel func(s Summary) (*plot.Plot, error)) error {
	const cols = 3
	rows := (len(r.Chosen) + cols - 1) / cols
	img := vgimg.New(vg.Length(cols)*5*vg.Inch, vg.Length(rows)*3*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: rows, Cols: cols, PadX: vg.Millimeter * 2, PadY: vg.Millimeter * 2,
		PadTop: vg.Millimeter * 2, PadBottom: vg.Millimeter * 2, PadLeft: vg.Millimeter * 2, PadRight: vg.Millimeter * 2}
	for i, s := range r.Chosen {
		p, err := panel(s.Summary)
		if err != nil {
			return err
		}
		p.Draw(tiles.At(dc, i%cols, i/cols))
	}
	return saveImage(img, file)
}

func line(xs, ys []float64, c color.Color, dashed bool) (*plotter.Line, error) {
	pts := make(plotter.XYs, 0, len(xs))
	for i := range xs {
		if math.IsNaN(ys[i]) || math.IsInf(ys[i], 0) {
			continue
		}
		pts = append(pts, plotter.XY{X: xs[i], Y: ys[i]})
	}
	l, err := plotter.NewLine(pts)
	if err != nil {
		return nil, err
	}
	l.Color = c
	l.Width = vg.Points(1.2)
	if dashed {
		l.Dashes = []vg.Length{vg.Points(4), vg.Points(2)}
	}
	return l, nil
}

// instancePanel plots prompt load in units of V_P (prefill instances needed) with the instances.
func (r *Report) instancePanel(s Summary) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s: %s (%.1f%% SLO, %.1f GPU-h)", r.Trace, s.Policy, 100*s.JointAttainment, s.GPUHours)
	p.X.Label.Text = "minutes"
	p.Y.Label.Text = "instances"
	n := len(s.Series)
	xs, need, pre, dec, conv := make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)
	for i, x := range s.Series {
		xs[i] = x.T / 60
		need[i] = x.PromptTPS / r.Env.Hardware.PrefillTPS
		pre[i] = float64(x.PrefillReady)
		dec[i] = float64(x.DecodeReady)
		conv[i] = float64(x.Converted)
	}
	return p, addSeries(p, xs, []series{
		{"prompt load / V_P", need, grey, false},
		{"prefill Ready", pre, blue, false},
		{"decode Ready", dec, orange, false},
		{"converted", conv, green, true},
	})
}

// series is one named line of a panel.
type series struct {
	name   string
	ys     []float64
	c      color.Color
	dashed bool
}

// addSeries draws each series over xs, with a legend entry, legend at the top.
func addSeries(p *plot.Plot, xs []float64, ss []series) error {
	for _, l := range ss {
		ln, err := line(xs, l.ys, l.c, l.dashed)
		if err != nil {
			return err
		}
		p.Add(ln)
		p.Legend.Add(l.name, ln)
	}
	p.Legend.Top = true
	return nil
}

// ttftPanel plots TTFT p50 and p99 of each window's arrivals against the pool SLO, on a log scale.
func (r *Report) ttftPanel(s Summary) (*plot.Plot, error) {
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s: %s TTFT", r.Trace, s.Policy)
	p.X.Label.Text = "minutes"
	p.Y.Label.Text = "seconds"
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	n := len(s.Series)
	xs, p50, p99, slo := make([]float64, n), make([]float64, n), make([]float64, n), make([]float64, n)
	for i, x := range s.Series {
		xs[i] = x.T / 60
		p50[i], p99[i] = clampLog(x.TTFTP50), clampLog(x.TTFTP99)
		slo[i] = r.Env.PoolTTFTSLO.Seconds()
	}
	return p, addSeries(p, xs, []series{{"p50", p50, blue, false}, {"p99", p99, red, false}, {"SLO (mean prompt)", slo, grey, true}})
}

// clampLog keeps a value drawable on a log axis: no window (-1) is skipped, unbounded is capped.
func clampLog(x float64) float64 {
	switch {
	case x < 0:
		return math.NaN()
	case math.IsInf(x, 1) || x > 600:
		return 600
	case x < 0.01:
		return 0.01
	}
	return x
}
