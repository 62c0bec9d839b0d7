package report

import (
	"fmt"
	"image/color"
	"math"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/text"
	"gonum.org/v1/plot/vg"
)

// palette gives each contender a fixed colour: kube-proxy's modes in greys
// and blues, ours in oranges.
var palette = map[string]color.Color{
	"kube-proxy-iptables": color.RGBA{R: 0x7f, G: 0x8c, B: 0x9a, A: 0xff},
	"kube-proxy-nftables": color.RGBA{R: 0x3b, G: 0x6e, B: 0xa8, A: 0xff},
	"kube-proxy-ipvs":     color.RGBA{R: 0x6a, G: 0x4c, B: 0x93, A: 0xff},
	"synterix-iptables":   color.RGBA{R: 0xe0, G: 0x7a, B: 0x1f, A: 0xff},
	"synterix-nftables":   color.RGBA{R: 0xc2, G: 0x3b, B: 0x22, A: 0xff},
	"synterix-ipvs":       color.RGBA{R: 0xf2, G: 0xb7, B: 0x05, A: 0xff},
}

// Plot draws figure f as grouped bars: sizes on the x axis, one bar per
// contender, each labelled with its value, or "over cap" (drawn at the cap)
// or "n/a".
func Plot(t *Table, f Figure, path string) error {
	p := plot.New()
	p.Title.Text = f.Title
	p.Y.Label.Text = f.Unit
	p.X.Label.Text = "Services (× 10 endpoints each)"
	p.Legend.Top = true
	p.Legend.Left = true
	grid := plotter.NewGrid()
	grid.Vertical.Width = 0
	p.Add(grid)
	k := len(t.Contenders)
	w := vg.Points(math.Min(28, 240/float64(max(1, k*len(t.Sizes)))))
	top := 0.0
	for i, c := range t.Contenders {
		vals := make(plotter.Values, len(t.Sizes))
		labels := plotter.XYLabels{XYs: make(plotter.XYs, len(t.Sizes)), Labels: make([]string, len(t.Sizes))}
		for j, size := range t.Sizes {
			cell := t.Cell(f, size, c)
			v, label := barOf(cell)
			vals[j] = v
			top = math.Max(top, v)
			labels.XYs[j] = plotter.XY{X: float64(j), Y: v}
			labels.Labels[j] = label
		}
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return err
		}
		bars.Color = colorOf(c, i)
		bars.LineStyle.Width = 0
		bars.Offset = w * vg.Length(float64(i)-float64(k-1)/2)
		lab, err := plotter.NewLabels(labels)
		if err != nil {
			return err
		}
		for s := range lab.TextStyle {
			lab.TextStyle[s].Font = font.From(plotter.DefaultFont, vg.Points(7))
			lab.TextStyle[s].XAlign = text.XCenter
		}
		lab.Offset = vg.Point{X: bars.Offset, Y: vg.Points(2)}
		p.Add(bars, lab)
		p.Legend.Add(c, bars)
	}
	var names []string
	for _, s := range t.Sizes {
		names = append(names, SizeLabel(s))
	}
	p.NominalX(names...)
	p.Y.Min = 0
	p.Y.Max = math.Max(top*1.35, 1e-9)
	return p.Save(8*vg.Inch, 4.5*vg.Inch, path)
}

// barOf returns a cell's bar height and label.
func barOf(c Cell) (float64, string) {
	switch c.Status {
	case "ok":
		return c.Value, format(c.Value)
	case "over_cap":
		return c.Value, "over cap"
	default:
		return 0, "n/a"
	}
}

func colorOf(contender string, i int) color.Color {
	if c, ok := palette[contender]; ok {
		return c
	}
	g := uint8(60 + 40*(i%5))
	return color.RGBA{R: g, G: g, B: g, A: 0xff}
}

// format prints a figure with three significant digits.
func format(v float64) string {
	switch {
	case math.IsNaN(v):
		return "n/a"
	case v == math.Trunc(v) && math.Abs(v) < 1e15:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 100:
		return fmt.Sprintf("%.0f", v)
	case math.Abs(v) >= 10:
		return fmt.Sprintf("%.1f", v)
	case math.Abs(v) >= 1:
		return fmt.Sprintf("%.2f", v)
	}
	return fmt.Sprintf("%.3f", v)
}
