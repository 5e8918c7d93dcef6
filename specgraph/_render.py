"""Drawing a plan: SVG (SpineNet-paper layout), Graphviz dot and Mermaid text.

The SVG layout: one column per node in plan order (endpoints share the last
column), one row per feature level (coarsest on top). Edges are routed
orthogonally through the free space between rows and columns, so they never
cross a node box; each edge's label sits just left of its target, one label
per input port, so labels never collide.

Every piece of text that comes from the plan goes through :func:`specgraph._text.visible`
(control, bidi, zero-width and other hidden characters shown as escapes, so text is one
line as displayed) and then the format's own escaping: XML autoescaping for SVG, HTML-like
labels for dot, ``#code;`` entities for Mermaid. A ``Plan`` can be built or deserialised
without the schema, so nothing here assumes its names were checked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache

import jinja2

from ._errors import ArgumentError
from ._plan import Conv, Edge, MaxPool, Node, Plan, Upsample
from ._text import visible

__all__ = ["edge_label", "render_dot", "render_mermaid", "render_svg"]

# Text metrics: the SVG uses a monospace font, so width = chars * 0.6 * font size.
FONT = 10
NAME_FONT = 11
CHAR_EM = 0.6
NAME_MAX = 24  # longer names are cut with an ellipsis (the full name is in the tooltip)

LEFT = 78  # room for the row labels
TOP = 66  # title and legend
MARGIN = 16
NODE_MIN_W = 96
NODE_PAD = 8
LANE = 7  # spacing of parallel edge lanes
PORT_IN = 14  # spacing of input ports (>= label height)
GAP_PAD = 8
CHANNEL_MIN = 18
CHANNEL_PAD = 6
CORNER = 4

FILLS = {
    "stem": ("#cfd8dc", "#607d8b"),
    "input": ("#fff9c4", "#f9a825"),  # a decoder's feature maps from outside
    "bottleneck": ("#bbdefb", "#1e88e5"),
    "residual": ("#c8e6c9", "#43a047"),
    "mbconv": ("#ffe0b2", "#fb8c00"),
    "decoder": ("#b2dfdb", "#00897b"),  # op blocks: FPN, NAS-FPN, BiFPN nodes
    "endpoint": ("#e1bee7", "#8e24aa"),
    "other": ("#eeeeee", "#757575"),
}
EDGE_STYLES = {
    "input": ("#37474f", ""),
    "merge": ("#d81b60", "5 3"),
    "chain": ("#9e9e9e", ""),
}


def _levels_text(plan: Plan, dash: str) -> str:
    """``L3-L7``, or ``L3, L5`` for a level selection."""
    if ".." in plan.levels_label:
        return f"L{plan.min_level}{dash}L{plan.max_level}"
    return ", ".join(f"L{key}" for key, _ in plan.endpoints)

def _width(text: str, size: float) -> float:
    """The drawn width of ``text``: hidden characters are drawn as their escapes."""
    return len(visible(text)) * CHAR_EM * size


def _short(name: str) -> str:
    return name if len(name) <= NAME_MAX else name[: NAME_MAX - 1] + "\u2026"


def _num(value: float) -> str:
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def edge_label(edge: Edge) -> str:
    """The short resampling label of an edge, e.g. ``\u2193\u00d74 conv+pool`` (down 4x through a conv and a
    max-pool), ``\u2191\u00d72 nearest``, ``= same``, ``merge``; empty for chain edges."""
    if edge.kind == "merge":
        return "merge"
    if edge.kind == "chain":
        return ""
    steps = edge.target_level - edge.source_level
    if steps > 0:
        kinds: list[str] = []
        for op in edge.ops:
            if isinstance(op, Conv) and op.stride > 1:
                kind = "dw" if op.depthwise else "conv"
            elif isinstance(op, MaxPool):
                kind = "pool"
            else:
                continue
            if kind not in kinds:
                kinds.append(kind)
        return f"\u2193\u00d7{2**steps} {'+'.join(kinds)}".rstrip()
    if steps < 0:
        mode = next((op.mode for op in edge.ops if isinstance(op, Upsample)), "nearest")
        return f"\u2191\u00d7{2**-steps} {mode}"
    return "= same"


def _is_op_block(node: Node) -> bool:
    return node.kind == "block" and not node.units


def _node_kind(node: Node) -> str:
    if node.kind in ("stem", "endpoint", "input"):
        return node.kind
    if _is_op_block(node):
        return "decoder"
    return node.block_type if node.block_type in FILLS else "other"


_OP_SHORT = {"separable_conv": "sep", "norm": "norm", "activation": "act", "maxpool": "pool"}


def _node_detail(node: Node) -> str:
    if node.kind in ("stem", "endpoint"):
        parts = []
        for op in node.ops:
            if isinstance(op, Conv):
                parts.append(f"{'dw' if op.depthwise else 'conv'} {op.kernel}\u00d7{op.kernel}")
            elif isinstance(op, MaxPool):
                parts.append("pool")
        return " + ".join(parts) or node.kind
    if _is_op_block(node):  # its fusion (of several inputs), then its ops: "attention: act+conv3+norm"
        ops = "+".join(f"{op.op}{op.kernel}" if isinstance(op, Conv) else _OP_SHORT.get(op.op, op.op)
                       for op in node.ops)
        fusion = node.fusion if len(node.inputs) > 1 else ""
        return visible(": ".join(part for part in (fusion, ops) if part) or "=")
    text = node.block_type or node.kind
    return f"{text} \u00d7{len(node.units)}" if len(node.units) > 1 else text


def _node_tooltip(plan: Plan, node: Node) -> str:
    lines = [f"{node.name} ({node.kind}{', ' + node.block_type if node.block_type else ''})",
             f"level {node.level}, {node.size[0]}\u00d7{node.size[1]}, {node.channels} channels"]
    if node.units:
        u = node.units[0]
        lines.append(f"{len(node.units)} \u00d7 {u.type} (filters {u.filters})")
    if node.ops:
        lines.append(", ".join(op.describe() for op in node.ops))
    if node.output_level is not None:
        lines.append(f"output block of level {node.output_level}")
    if node.shares:
        lines.append(f"runs the weights of {node.shares}")
    if node.spec_path:
        lines.append(node.spec_path)
    # each line made visible on its own: the tooltip keeps its line breaks, the names cannot add any
    return "\n".join(visible(line) for line in lines)


# ---------------------------------------------------------------- layout


@dataclass
class _Text:
    x: float
    y: float
    text: str
    size: float = FONT
    anchor: str = "start"
    weight: str = "normal"
    fill: str = "#212121"
    cls: str = "label"

    def __post_init__(self) -> None:
        self.text = visible(self.text)  # every text node: plan text shown as it is, nothing hidden

    @property
    def box(self) -> tuple[float, float, float, float]:
        w = _width(self.text, self.size)
        x0 = {"start": self.x, "middle": self.x - w / 2, "end": self.x - w}[self.anchor]
        return (x0, self.y - 0.8 * self.size, x0 + w, self.y + 0.25 * self.size)


@dataclass
class _Route:
    edge: Edge
    su: int  # source column
    sv: int  # target column
    via: str = "adjacent"  # adjacent | corridor | channel
    track: int = 0  # corridor row or channel index
    lane: int = 0
    approach: float = 0.0
    port_in: float = 0.0
    port_out: float = 0.0
    lane_in: int = 0
    lane_out: int = 0
    y: float = 0.0  # the horizontal run's y


@dataclass
class _Layout:
    width: float = 0
    height: float = 0
    title: str = ""
    title_text: _Text | None = None
    rows: list[dict] = field(default_factory=list)
    nodes: list[dict] = field(default_factory=list)
    edges: list[dict] = field(default_factory=list)
    legend: list[dict] = field(default_factory=list)
    decoder: dict | None = None  # the frame around the decoder's columns (op blocks after the backbone)


def _decoder_columns(plan: Plan, col: dict[str, int]) -> tuple[int, int] | None:
    """The columns of the decoder: a composition's parts after the backbone, else the op blocks; when they all come
    after every other node (a backbone then its decoder); None otherwise."""
    first = plan.nodes[0].part if plan.nodes else None
    if first is not None:
        def in_decoder(n: Node) -> bool:
            return n.part != first
    else:
        in_decoder = _is_op_block
    ops = [col[n.name] for n in plan.nodes if n.kind != "endpoint" and in_decoder(n)]
    rest = [col[n.name] for n in plan.nodes if n.kind != "endpoint" and not in_decoder(n)]
    if not ops or not rest or min(ops) <= max(rest):
        return None
    return min(ops), max(ops)


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


# A diff's marks on the second plan's nodes: added and changed blocks, outlined in these colours.
MARKS = {"added": "#2e7d32", "changed": "#ef6c00"}


class _Layouter:
    def __init__(self, plan: Plan, marks: Mapping[str, str] | None = None, removed: Sequence[str] = ()) -> None:
        self.plan = plan
        self.marks = dict(marks or {})
        self.removed = list(removed)
        nodes = plan.nodes
        self.col: dict[str, int] = {}
        body = [n for n in nodes if n.kind != "endpoint"]
        for i, n in enumerate(body):
            self.col[n.name] = i
        self.ncols = len(body) + any(n.kind == "endpoint" for n in nodes)
        for n in nodes:
            if n.kind == "endpoint":
                self.col[n.name] = self.ncols - 1
        levels = sorted({n.level for n in nodes}, reverse=True)
        levels = list(range(levels[0], levels[-1] - 1, -1)) if levels else []
        self.levels = levels
        self.row = {n.name: levels.index(n.level) for n in nodes}
        self.occupied = {(self.row[n.name], self.col[n.name]) for n in nodes}
        max_in = max((len(n.inputs) for n in nodes), default=1)
        self.node_h = max(54, PORT_IN * (max(max_in, 1) - 1) + 30)
        self.node_w = self._node_width()

    def _node_width(self) -> float:
        need = NODE_MIN_W - 2 * NODE_PAD
        for n in self.plan.nodes:
            name = _width(_short(visible(n.name)), NAME_FONT)
            if n.output_level is not None:
                name += 6 + self._badge_w(n)
            need = max(need, name, _width(_node_detail(n), FONT), _width(self._size_text(n), FONT))
        return float(int(need + 2 * NODE_PAD + 0.999))

    @staticmethod
    def _badge_w(node: Node) -> float:
        return _width(f"out L{node.output_level}", FONT - 1) + 6

    @staticmethod
    def _size_text(node: Node) -> str:
        return f"{node.channels}ch {node.size[0]}\u00d7{node.size[1]}"

    # -- routing: pick a horizontal track and a lane for every edge that skips columns
    def route(self) -> list[_Route]:
        routes = [_Route(e, self.col[e.source], self.col[e.target]) for e in self.plan.edges]
        used: dict[tuple[str, int], list[list[tuple[int, int]]]] = {}

        def free_lane(track: tuple[str, int], span: tuple[int, int], limit: int | None) -> int | None:
            lanes = used.setdefault(track, [])
            for i, spans in enumerate(lanes):
                if not any(_overlaps(span, s) for s in spans):
                    spans.append(span)
                    return i
            if limit is not None and len(lanes) >= limit:
                return None
            lanes.append([span])
            return len(lanes) - 1

        corridor_cap = max(2, int((self.node_h - 16) // LANE))
        for r in sorted(routes, key=lambda r: (r.su, r.sv, r.edge.target, r.edge.source)):
            if r.sv <= r.su + 1:
                continue
            span = (r.su, r.sv - 1)
            rs, rt = self.row[r.edge.source], self.row[r.edge.target]
            for row in dict.fromkeys((rt, rs)):
                if all((row, c) not in self.occupied for c in range(r.su + 1, r.sv)):
                    lane = free_lane(("corridor", row), span, corridor_cap)
                    if lane is not None:
                        r.via, r.track, r.lane = "corridor", row, lane
                        break
            if r.via == "corridor":
                continue
            if rs < rt:
                options = [rt]
            elif rs > rt:
                options = [rt + 1]
            else:
                options = [rt, rt + 1]
            best = min(options, key=lambda ch: (self._lane_needed(used.get(("channel", ch), []), span), ch))
            r.via, r.track = "channel", best
            r.lane = free_lane(("channel", best), span, None) or 0
        self.used = used
        return routes

    @staticmethod
    def _lane_needed(lanes: list[list[tuple[int, int]]], span: tuple[int, int]) -> int:
        for i, spans in enumerate(lanes):
            if not any(_overlaps(span, s) for s in spans):
                return i
        return len(lanes)

    def _decoder_frame(self, col_x: list[float], nw: float, channel_top: list[float]) -> dict | None:
        span = _decoder_columns(self.plan, self.col)
        if span is None:
            return None
        x0, x1 = col_x[span[0]] - 10, col_x[span[1]] + nw + 6
        y0, y1 = channel_top[0] - 2, channel_top[-1] + 4
        # A composition names its parts: the backbone's spec, then the decoders'.
        parts = list(dict.fromkeys(n.part for n in self.plan.nodes if n.part is not None))
        decoder = " + ".join(parts[1:]) if len(parts) > 1 else "decoder"
        backbone = parts[0] if parts else "inputs" if self.plan.inputs else "backbone"
        return {"x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0,
                "t": _Text(x1 - 4, y0 + 10, decoder, FONT, anchor="end", fill="#00897b", cls="part"),
                "b": _Text(x0 - 6, y0 + 10, backbone, FONT, anchor="end", fill="#607d8b", cls="part")}

    def build(self) -> _Layout:
        plan = self.plan
        routes = self.route()
        nh, nw = self.node_h, self.node_w
        # rows: channel i sits above row i; channel len(levels) below the last row
        nrows = len(self.levels)
        channel_h = []
        for ch in range(nrows + 1):
            lanes = len(self.used.get(("channel", ch), []))
            channel_h.append(max(CHANNEL_MIN, lanes * LANE + 2 * CHANNEL_PAD))
        row_top, channel_top = [], []
        y = TOP
        for i in range(nrows):
            channel_top.append(y)
            y += channel_h[i]
            row_top.append(y)
            y += nh
        channel_top.append(y)
        y += channel_h[nrows]
        height = y + MARGIN

        def channel_y(r: _Route) -> float:
            n = len(self.used[("channel", r.track)])
            top, h = channel_top[r.track], channel_h[r.track]
            return top + (h - (n - 1) * LANE) / 2 + r.lane * LANE

        def corridor_y(r: _Route) -> float:
            # half-lane offsets: never on an input port's y, so a run never lies on a port's entry segment
            k = r.lane
            offset = (k // 2 + 0.5) * LANE * (1 if k % 2 else -1)
            return row_top[r.track] + nh / 2 + offset

        node_cy = {n.name: row_top[self.row[n.name]] + nh / 2 for n in plan.nodes}
        for r in routes:
            if r.via == "channel":
                r.y = channel_y(r)
            elif r.via == "corridor":
                r.y = corridor_y(r)

        # input ports: sorted by where the edge comes from, top to bottom
        by_target: dict[str, list[_Route]] = {}
        by_source: dict[str, list[_Route]] = {}
        for r in routes:
            by_target.setdefault(r.edge.target, []).append(r)
            by_source.setdefault(r.edge.source, []).append(r)
        gap_in: dict[int, int] = {}
        gap_label: dict[int, float] = {}
        for name, rs in by_target.items():
            for r in rs:
                r.approach = node_cy[r.edge.source] if r.via == "adjacent" else r.y
            rs.sort(key=lambda r: (r.approach, r.edge.source))
            n = len(rs)
            for i, r in enumerate(rs):
                r.port_in = node_cy[name] + (i - (n - 1) / 2) * PORT_IN
            gap = self.col[name] - 1
            above = [r for r in rs if r.approach <= r.port_in]
            below = [r for r in rs if r.approach > r.port_in][::-1]
            base = gap_in.get(gap, 0)
            # rightmost lanes first: from above in port order, then from below bottom-up
            ordered = above + below
            for i, r in enumerate(ordered):
                r.lane_in = base + len(ordered) - 1 - i
            gap_in[gap] = base + n
            widest = max((_width(edge_label(r.edge), FONT) for r in rs), default=0)
            gap_label[gap] = max(gap_label.get(gap, 0), widest)
        gap_out: dict[int, int] = {}
        for name, rs in by_source.items():
            for r in rs:
                r.approach = node_cy[r.edge.target] if r.via == "adjacent" else r.y
            rs.sort(key=lambda r: (r.approach, r.edge.target))
            n = len(rs)
            step = min(10.0, (nh - 12) / max(n - 1, 1))
            cy = node_cy[name]
            for i, r in enumerate(rs):
                r.port_out = cy + (i - (n - 1) / 2) * step
            skipping = [r for r in rs if r.via != "adjacent"]
            up = [r for r in skipping if r.approach <= r.port_out]
            down = [r for r in skipping if r.approach > r.port_out][::-1]
            for i, r in enumerate(up + down):
                r.lane_out = i
            gap_out[self.col[name]] = len(skipping)

        # columns
        col_x = [float(LEFT + MARGIN)]
        gap_x = []
        for c in range(self.ncols - 1):
            gx = col_x[c] + nw
            gap_x.append(gx)
            lanes = gap_out.get(c, 0) + gap_in.get(c, 0)
            label = gap_label.get(c, 0)
            width = GAP_PAD * 2 + lanes * LANE + (label + 8 if label else 0)
            col_x.append(gx + max(width, 28))
        width = col_x[-1] + nw + MARGIN if col_x else LEFT + 2 * MARGIN

        def lane_x(gap: int, index: int) -> float:
            return gap_x[gap] + GAP_PAD + index * LANE

        layout = _Layout()
        for r in routes:
            e = r.edge
            sx = col_x[r.su] + nw
            tx = col_x[r.sv]
            tgap = r.sv - 1
            xi = lane_x(tgap, gap_out.get(tgap, 0) + r.lane_in)
            if r.via == "adjacent":
                points = [(sx, r.port_out), (xi, r.port_out), (xi, r.port_in), (tx, r.port_in)]
            else:
                xo = lane_x(r.su, r.lane_out)
                points = [(sx, r.port_out), (xo, r.port_out), (xo, r.y), (xi, r.y), (xi, r.port_in),
                          (tx, r.port_in)]
            color, dash = EDGE_STYLES[e.kind]
            label = edge_label(e)
            text = None
            if label:
                t = _Text(tx - 5, r.port_in - 3, label, anchor="end", fill=color, cls="edge-label")
                x0, y0, x1, y1 = t.box
                text = {"t": t, "bg": (x0 - 1, y0 - 0.5, x1 - x0 + 2, y1 - y0 + 1)}
            layout.edges.append({
                "source": visible(e.source), "target": visible(e.target), "kind": e.kind,
                "d": _path(points), "color": color, "dash": dash, "label": text,
                "title": visible(f"{e.source} \u2192 {e.target}: {e.describe()}"),
            })

        for n in plan.nodes:
            x, y = col_x[self.col[n.name]], row_top[self.row[n.name]]
            kind = _node_kind(n)
            fill, stroke = FILLS[kind]
            cy = y + nh / 2
            texts = [
                _Text(x + NODE_PAD, cy - 9, _short(visible(n.name)), NAME_FONT, weight="bold", cls="name"),
                _Text(x + NODE_PAD, cy + 4, _node_detail(n), cls="type"),
                _Text(x + NODE_PAD, cy + 17, self._size_text(n), cls="size"),
            ]
            badge = None
            if n.output_level is not None:
                bw = self._badge_w(n)
                bx, by = x + nw - 4 - bw, cy - 9 - 10
                badge = {"x": bx, "y": by, "w": bw, "h": 13,
                         "t": _Text(bx + bw / 2, by + 9.5, f"out L{n.output_level}", FONT - 1, anchor="middle",
                                    fill="#ffffff", cls="badge")}
            layout.nodes.append({
                "name": visible(n.name), "kind": visible(n.kind), "type": kind, "x": x, "y": y, "w": nw, "h": nh,
                "fill": fill, "stroke": stroke, "strong": n.output_level is not None or n.kind == "endpoint",
                "texts": texts, "badge": badge, "title": _node_tooltip(plan, n),
                "level": n.level, "output": n.output_level,
                "mark": self.marks.get(n.name), "mark_color": MARKS.get(self.marks.get(n.name, ""), ""),
            })

        for i, level in enumerate(self.levels):
            # the band covers the row only: edges running in the channels stay on white
            top, bottom = row_top[i] - 4, row_top[i] + nh + 4
            layout.rows.append({
                "level": level, "y": top, "h": bottom - top,
                "t": _Text(MARGIN, row_top[i] + nh / 2 + 4, f"L{level} /{2**level}", 11, weight="bold",
                           fill="#455a64", cls="row-label"),
            })

        # title and legend
        h, w = plan.input_size
        layout.title = visible(f"{plan.spec_name} \u00b7 variant {plan.variant} \u00b7 input {h}\u00d7{w} "
                               f"\u00b7 endpoints {_levels_text(plan, chr(0x2013))}")
        title = _Text(MARGIN, 22, layout.title, 13, weight="bold", cls="title")
        x = float(MARGIN)
        legend: list[dict] = []
        kinds = list(dict.fromkeys(_node_kind(n) for n in plan.nodes))
        for kind in [k for k in FILLS if k in kinds]:
            fill, stroke = FILLS[kind]
            legend.append({"kind": "node", "x": x, "fill": fill, "stroke": stroke,
                           "t": _Text(x + 18, 48, kind, cls="legend")})
            x += 18 + _width(kind, FONT) + 14
        edge_kinds = {e.kind for e in plan.edges}
        for kind, text in (("input", "resample"), ("merge", "merge (added as is)"), ("chain", "chain")):
            if kind in edge_kinds:
                color, dash = EDGE_STYLES[kind]
                legend.append({"kind": "edge", "x": x, "color": color, "dash": dash,
                               "t": _Text(x + 28, 48, text, cls="legend")})
                x += 28 + _width(text, FONT) + 14
        if any(n.output_level is not None for n in plan.nodes):
            bw = _width("out Ln", FONT - 1) + 6
            legend.append({"kind": "badge", "x": x, "w": bw,
                           "bt": _Text(x + bw / 2, 47.5, "out Ln", FONT - 1, anchor="middle", fill="#ffffff",
                                       cls="badge"),
                           "t": _Text(x + bw + 6, 48, "output block of level n", cls="legend")})
            x += bw + 6 + _width("output block of level n", FONT) + 14
        for mark, color in MARKS.items():
            if mark in self.marks.values():
                legend.append({"kind": "mark", "x": x, "color": color, "t": _Text(x + 18, 48, mark, cls="legend")})
                x += 18 + _width(mark, FONT) + 14
        if self.removed:
            text = visible("removed: " + ", ".join(self.removed))
            legend.append({"kind": "text", "x": x, "t": _Text(x, 48, text, cls="legend")})
            x += _width(text, FONT) + 14
        layout.legend = legend
        layout.decoder = self._decoder_frame(col_x, nw, channel_top)
        layout.title_text = title
        layout.width = max(width, x + MARGIN, title.box[2] + MARGIN)
        layout.height = height
        return layout


def _path(points: list[tuple[float, float]]) -> str:
    """An orthogonal polyline with rounded corners."""
    pts: list[tuple[float, float]] = []
    for p in points:
        if pts and abs(p[0] - pts[-1][0]) < 0.05 and abs(p[1] - pts[-1][1]) < 0.05:
            continue
        pts.append(p)
    # drop points in the middle of a straight run
    keep = [pts[0]]
    for i in range(1, len(pts) - 1):
        a, b, c = keep[-1], pts[i], pts[i + 1]
        if (abs(a[0] - b[0]) < 0.05 and abs(b[0] - c[0]) < 0.05) or (abs(a[1] - b[1]) < 0.05
                                                                       and abs(b[1] - c[1]) < 0.05):
            continue
        keep.append(b)
    keep.append(pts[-1])
    out = [f"M{_num(keep[0][0])},{_num(keep[0][1])}"]
    for i in range(1, len(keep) - 1):
        a, b, c = keep[i - 1], keep[i], keep[i + 1]
        r = min(CORNER, _dist(a, b) / 2, _dist(b, c) / 2)
        p1 = _toward(b, a, r)
        p2 = _toward(b, c, r)
        out.append(f"L{_num(p1[0])},{_num(p1[1])}Q{_num(b[0])},{_num(b[1])} {_num(p2[0])},{_num(p2[1])}")
    out.append(f"L{_num(keep[-1][0])},{_num(keep[-1][1])}")
    return "".join(out)


def _dist(a: tuple[float, float], b: tuple[float, float]) -> float:
    return abs(a[0] - b[0]) + abs(a[1] - b[1])


def _toward(p: tuple[float, float], q: tuple[float, float], r: float) -> tuple[float, float]:
    d = _dist(p, q)
    if d == 0:
        return p
    return (p[0] + (q[0] - p[0]) * r / d, p[1] + (q[1] - p[1]) * r / d)


# ---------------------------------------------------------------- templates


@cache
def _env(markup: bool) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("specgraph", "templates"),
        autoescape=markup,
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["num"] = _num
    env.filters["dot_html"] = _dot_html
    env.filters["mermaid"] = _mermaid_text
    return env


def render_svg(plan: Plan, marks: Mapping[str, str] | None = None, removed: Sequence[str] = ()) -> str:
    """The plan as a standalone SVG document (text), laid out as in the SpineNet paper. ``marks`` (a diff's):
    node name -> ``added`` or ``changed``, outlined in green or orange; ``removed``: names the legend lists."""
    if not isinstance(plan, Plan):
        raise ArgumentError(f"render_svg(plan): expected a Plan (see specgraph.plan), got {type(plan).__name__}")
    unknown = sorted({str(m) for m in (marks or {}).values()} - set(MARKS))
    if unknown:
        raise ArgumentError(f"marks: unknown mark(s) {', '.join(unknown)}; known: {', '.join(MARKS)}")
    layout = _Layouter(plan, marks, removed).build()
    return _env(True).get_template("plan.svg.j2").render(layout=layout, plan_hash=plan.hash)


def _dot_html(text: str) -> str:
    """Text for a Graphviz HTML-like label (or the ``//`` comment line): one line (:func:`visible`), then
    XML-escaped, so no escString or quote rules apply."""
    text = visible(text)
    return (text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
            .replace('"', "&quot;").replace("'", "&#39;").replace("\\", "&#92;"))


def _mermaid_text(text: str) -> str:
    """Text inside a quoted Mermaid label (or the ``%%`` comment line): one line (:func:`visible`), and
    every character that Mermaid or its HTML labels read as syntax becomes a ``#code;`` entity
    (``%`` too, so no ``%%`` comment or directive can start inside a label)."""
    out = []
    for ch in visible(text):
        if ch in '"#%&<>`|[](){}\\':
            out.append(f"#{ord(ch)};")
        else:
            out.append(ch)
    return "".join(out)


def _text_view(plan: Plan) -> dict:
    ids = {n.name: f"n{i}" for i, n in enumerate(plan.nodes)}
    nodes = []
    for n in plan.nodes:
        detail = _node_detail(n)
        lines = [n.name, detail, f"{n.channels}ch {n.size[0]}\u00d7{n.size[1]}"]
        if n.output_level is not None:
            lines.append(f"out L{n.output_level}")
        nodes.append({"id": ids[n.name], "name": n.name, "lines": lines, "level": n.level,
                      "fill": FILLS[_node_kind(n)][0], "stroke": FILLS[_node_kind(n)][1],
                      "output": n.output_level is not None})
    edges = [{"source": ids[e.source], "target": ids[e.target], "kind": e.kind, "label": edge_label(e),
              "color": EDGE_STYLES[e.kind][0]} for e in plan.edges]
    levels = sorted({n.level for n in plan.nodes}, reverse=True)
    rows = [{"level": lv, "nodes": [x for x in nodes if x["level"] == lv]} for lv in levels]
    h, w = plan.input_size
    title = (f"{plan.spec_name} variant {plan.variant} input {h}x{w} "
             f"endpoints {_levels_text(plan, '-')}")
    return {"nodes": nodes, "edges": edges, "rows": rows, "title": title, "hash": plan.hash}


def render_dot(plan: Plan) -> str:
    """The plan as Graphviz dot text: one cluster per level, block types as fill colours, merge edges dashed.

    Node ids are ``n0``, ``n1``, ... in plan order; names appear only in HTML-like labels."""
    if not isinstance(plan, Plan):
        raise ArgumentError(f"render_dot(plan): expected a Plan (see specgraph.plan), got {type(plan).__name__}")
    return _env(False).get_template("plan.dot.j2").render(**_text_view(plan))


def render_mermaid(plan: Plan) -> str:
    """The plan as a Mermaid flowchart: one subgraph per level, merge edges dotted.

    Node ids are ``n0``, ``n1``, ... in plan order; names appear only in quoted, entity-escaped labels."""
    if not isinstance(plan, Plan):
        raise ArgumentError(f"render_mermaid(plan): expected a Plan (see specgraph.plan), got {type(plan).__name__}")
    return _env(False).get_template("plan.mmd.j2").render(**_text_view(plan))
