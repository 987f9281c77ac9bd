// Zone / line editor: click on the snapshot to place points (normalised 0..1), drawn as SVG;
// the camera's saved rules and masks are drawn too. The form posts the points as JSON.
(function () {
  "use strict";
  const overlay = document.getElementById("overlay");
  if (!overlay) return;
  const pointsField = document.getElementById("points");
  const kind = document.getElementById("kind");
  const NS = "http://www.w3.org/2000/svg";
  let points = [];
  try { points = JSON.parse(pointsField.value || "[]"); } catch (e) { points = []; }
  const saved = JSON.parse(document.getElementById("shapes").textContent);

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    (parent || overlay).appendChild(node);
    return node;
  }
  function poly(pts, cls) {
    return el(pts.length === 2 ? "polyline" : "polygon", {
      points: pts.map((p) => p[0] + "," + p[1]).join(" "), class: cls, "vector-effect": "non-scaling-stroke",
    });
  }
  function arrow(a, b, cls) {
    const dx = b[0] - a[0], dy = b[1] - a[1], len = Math.hypot(dx, dy) || 1;
    const ux = dx / len, uy = dy / len, s = 0.03;
    const tip = b, l = [b[0] - s * ux - s * 0.6 * uy, b[1] - s * uy + s * 0.6 * ux];
    const r = [b[0] - s * ux + s * 0.6 * uy, b[1] - s * uy - s * 0.6 * ux];
    poly([l, tip, r], cls + " head");
  }
  function draw() {
    overlay.replaceChildren();
    for (const r of saved.rules) {
      const pts = r.line || r.zone;
      if (!pts) continue;
      poly(pts, "saved " + r.kind).setAttribute("data-rule", r.id);
      if (r.line) arrow(r.line[0], r.line[1], "saved line");
    }
    for (const m of saved.masks) poly(m, "saved mask");
    for (const t of saved.tracks || []) {  // live tracks when the page was drawn
      const [x1, y1, x2, y2] = t.box;
      el("rect", { x: x1, y: y1, width: x2 - x1, height: y2 - y1, class: "track", "data-track": t.track,
        "vector-effect": "non-scaling-stroke" });
    }
    if (points.length) {
      poly(points, "drawing " + kind.value).setAttribute("id", "drawing");
      if (kind.value === "line" && points.length === 2) arrow(points[0], points[1], "drawing line");
      for (const p of points) el("circle", { cx: p[0], cy: p[1], r: 0.008, class: "drawing dot" });
    }
    pointsField.value = JSON.stringify(points);
  }
  overlay.addEventListener("click", (e) => {
    const box = overlay.getBoundingClientRect();
    const x = Math.min(1, Math.max(0, (e.clientX - box.left) / box.width));
    const y = Math.min(1, Math.max(0, (e.clientY - box.top) / box.height));
    if (kind.value === "line" && points.length >= 2) points = [];
    points.push([Number(x.toFixed(4)), Number(y.toFixed(4))]);
    draw();
  });
  kind.addEventListener("change", () => { points = []; draw(); });
  document.getElementById("clear").addEventListener("click", () => { points = []; draw(); });
  draw();
})();
