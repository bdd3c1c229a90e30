# sbxd: run by the python kernel at its start (IPKernelApp.exec_files).
#
# Adds two display formats to IPython's, which the code interpreter server
# turns into E2B's result fields:
#   application/vnd.sbxd.chart+json  `chart`: the data of a matplotlib
#       figure in E2B's chart shapes (line, scatter, bar, pie,
#       box_and_whisker, superchart for a figure of several axes);
#   application/vnd.sbxd.data+json   `data`: a pandas DataFrame's columns.
# E2B's own extraction is a PyPI package (e2b-charts); this is a small
# rewrite of what it returns, for the charts matplotlib makes.
# Everything here lives in one function so the user's namespace is left
# as it was.


def _sbxd_setup():
    import math
    import sys

    ip = get_ipython()  # noqa: F821 - IPython's own
    if ip is None:
        return
    from IPython.core.formatters import BaseFormatter
    from traitlets import Unicode, ObjectName

    CHART = "application/vnd.sbxd.chart+json"
    DATA = "application/vnd.sbxd.data+json"

    def num(v):
        try:
            f = float(v)
        except (TypeError, ValueError):
            return str(v)
        if math.isnan(f) or math.isinf(f):
            return None
        return int(f) if f.is_integer() and abs(f) < 2 ** 53 and not isinstance(v, float) else f

    def unit_of(label):
        # "Time (s)" -> "s", like E2B
        if label and label.endswith(")") and "(" in label:
            return label[label.rindex("(") + 1:-1].strip() or None
        return None

    def axis_kind(axis):
        import matplotlib.dates as mdates
        from matplotlib.category import UnitData

        if isinstance(axis.units, UnitData):
            return "categorical"
        fmt = axis.get_major_formatter()
        if isinstance(fmt, (mdates.DateFormatter, mdates.AutoDateFormatter, mdates.ConciseDateFormatter)):
            return "datetime"
        return None

    def axis_value(axis, kind, v):
        if kind == "datetime":
            import matplotlib.dates as mdates

            try:
                return mdates.num2date(float(v)).isoformat()
            except (TypeError, ValueError, OverflowError):
                return str(v)
        if kind == "categorical":
            for name, code in axis.units._mapping.items():
                if code == v:
                    return str(name)
            return str(v) if isinstance(v, str) else num(v)
        return num(v)

    def base2d(ax, kind):
        xl, yl = ax.get_xlabel(), ax.get_ylabel()
        return {"type": kind, "title": ax.get_title(), "x_label": xl, "y_label": yl,
                "x_unit": unit_of(xl), "y_unit": unit_of(yl), "elements": []}

    def point_chart(ax, kind):
        c = base2d(ax, kind)
        for name, axis, get_ticks, get_labels, get_scale in (
                ("x", ax.xaxis, ax.get_xticks, ax.get_xticklabels, ax.get_xscale),
                ("y", ax.yaxis, ax.get_yticks, ax.get_yticklabels, ax.get_yscale)):
            k = axis_kind(axis)
            c[name + "_scale"] = k or get_scale()
            c[name + "_ticks"] = [axis_value(axis, k, t) for t in get_ticks()]
            c[name + "_tick_labels"] = [t.get_text() for t in get_labels()]
        xk, yk = axis_kind(ax.xaxis), axis_kind(ax.yaxis)
        if kind == "line":
            for line in ax.get_lines():
                xs, ys = line.get_xdata(orig=False), line.get_ydata(orig=False)
                c["elements"].append({"label": line.get_label(),
                                      "points": [[axis_value(ax.xaxis, xk, x), axis_value(ax.yaxis, yk, y)]
                                                 for x, y in zip(xs, ys)]})
        else:
            from matplotlib.collections import PathCollection

            for coll in ax.collections:
                if not isinstance(coll, PathCollection):
                    continue
                c["elements"].append({"label": coll.get_label(),
                                      "points": [[axis_value(ax.xaxis, xk, x), axis_value(ax.yaxis, yk, y)]
                                                 for x, y in coll.get_offsets()]})
        return c

    def bar_chart(ax, containers):
        c = base2d(ax, "bar")
        xk = axis_kind(ax.xaxis)
        ticks = {}
        for t, lab in zip(ax.get_xticks(), ax.get_xticklabels()):
            ticks[round(float(t), 6)] = lab.get_text()
        for cont in containers:
            horizontal = getattr(cont, "orientation", "vertical") == "horizontal"
            for i, bar in enumerate(cont.patches):
                if horizontal:
                    pos, value = bar.get_y() + bar.get_height() / 2, bar.get_width()
                else:
                    pos, value = bar.get_x() + bar.get_width() / 2, bar.get_height()
                label = ticks.get(round(float(pos), 6))
                if not label:
                    label = axis_value(ax.xaxis, xk, pos) if xk else str(i)
                c["elements"].append({"label": str(label), "value": num(value), "group": cont.get_label()})
        return c

    def pie_chart(ax, wedges):
        c = {"type": "pie", "title": ax.get_title(), "elements": []}
        for w in wedges:
            c["elements"].append({"label": w.get_label(), "angle": num(abs(w.theta2 - w.theta1)),
                                  "radius": num(w.r)})
        return c

    def box_chart(ax, stats):
        c = base2d(ax, "box_and_whisker")
        labels = [t.get_text() for t in ax.get_xticklabels()]
        for i, s in enumerate(stats):
            label = s.get("label")
            if label is None:
                label = labels[i] if i < len(labels) else str(i + 1)
            c["elements"].append({"label": str(label), "min": num(s["whislo"]), "first_quartile": num(s["q1"]),
                                  "median": num(s["med"]), "third_quartile": num(s["q3"]),
                                  "max": num(s["whishi"]), "outliers": [num(v) for v in s.get("fliers", [])]})
        return c

    def axes_chart(ax):
        from matplotlib.container import BarContainer
        from matplotlib.patches import Wedge
        from matplotlib.collections import PathCollection

        wedges = [p for p in ax.patches if isinstance(p, Wedge)]
        if wedges:
            return pie_chart(ax, wedges)
        stats = getattr(ax, "_sbxd_box_stats", None)
        if stats:
            return box_chart(ax, stats)
        bars = [b for b in ax.containers if isinstance(b, BarContainer)]
        if bars:
            return bar_chart(ax, bars)
        if any(isinstance(x, PathCollection) for x in ax.collections):
            return point_chart(ax, "scatter")
        if ax.get_lines():
            return point_chart(ax, "line")
        return None

    def figure_chart(fig):
        try:
            fig.draw_without_rendering()  # tick labels are known once drawn
        except Exception:  # noqa: BLE001
            pass
        axes = [ax for ax in fig.get_axes() if ax.get_visible()]
        charts = [c for c in (axes_chart(ax) for ax in axes) if c is not None]
        if not charts:
            return None
        if len(axes) == 1:
            return charts[0]
        title = fig._suptitle.get_text() if getattr(fig, "_suptitle", None) else ""
        return {"type": "superchart", "title": title, "elements": charts}

    class JSONish(BaseFormatter):
        format_type = Unicode(CHART)
        print_method = ObjectName("_repr_sbxd_chart_")
        _return_type = (list, dict)

        def __call__(self, obj):
            # whatever goes wrong here must not cost the user the figure
            try:
                return super().__call__(obj)
            except Exception:  # noqa: BLE001
                return None

    chart_fmt = JSONish(parent=ip.display_formatter)
    data_fmt = JSONish(parent=ip.display_formatter)
    data_fmt.format_type = DATA
    data_fmt.print_method = "_repr_sbxd_data_"
    ip.display_formatter.formatters[CHART] = chart_fmt
    ip.display_formatter.formatters[DATA] = data_fmt

    def on_figure(fig):
        return figure_chart(fig)

    def on_frame(df):
        if df.size > 100000:
            return None
        import pandas

        data = df.to_dict(orient="list")
        out = {}
        for k, col in data.items():
            out[str(k)] = [v.isoformat() if isinstance(v, pandas.Timestamp) else v for v in col]
        return out

    data_fmt.for_type_by_name("pandas.core.frame", "DataFrame", on_frame)
    # Figures get a method the chart formatter finds (print_method), not a
    # printer: the inline backend drops every formatter's Figure printer
    # when it sets its own (IPython's select_figure_formats).

    # Box plots leave only lines behind: remember their statistics when
    # they are drawn (Axes.bxp draws every box plot, Axes.boxplot too).
    # Axes and Figure are patched as soon as their modules are imported.
    def patch_axes(mod):
        orig = mod.Axes.bxp

        def bxp(self, bxpstats, *args, **kwargs):
            r = orig(self, bxpstats, *args, **kwargs)
            try:
                self._sbxd_box_stats = list(getattr(self, "_sbxd_box_stats", [])) + [dict(s) for s in bxpstats]
            except Exception:  # noqa: BLE001
                pass
            return r

        bxp.__doc__ = orig.__doc__
        mod.Axes.bxp = bxp

    import importlib.abc
    import importlib.machinery

    def patch_figure(mod):
        mod.Figure._repr_sbxd_chart_ = on_figure

    patches = {"matplotlib.axes": patch_axes, "matplotlib.figure": patch_figure}

    class PatchHook(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            patch = patches.get(name)
            if patch is None:
                return None
            spec = importlib.machinery.PathFinder.find_spec(name, path)
            if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
                return spec
            exec_module = spec.loader.exec_module

            def patched(module):
                exec_module(module)
                patch(module)

            spec.loader.exec_module = patched
            return spec

    for name, patch in list(patches.items()):
        if name in sys.modules:
            patch(sys.modules[name])
            del patches[name]
    sys.meta_path.insert(0, PatchHook())


_sbxd_setup()
del _sbxd_setup
