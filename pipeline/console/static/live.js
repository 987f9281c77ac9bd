// Live alerts over Server-Sent Events: newest first, at most 200 rows, filtered as you type.
(function () {
  "use strict";
  const body = document.querySelector("#live-alerts tbody");
  const state = document.getElementById("stream-state");
  const filter = document.getElementById("filter");
  const seen = new Set(Array.from(body.querySelectorAll("tr")).map((tr) => tr.dataset.id));
  const fmt = (x) => (x === null || x === undefined ? "-" : Number(x).toFixed(2));
  function cell(tr, text, cls) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }
  function applyFilter(tr) {
    const q = filter.value.trim().toLowerCase();
    tr.style.display = !q || tr.dataset.text.toLowerCase().includes(q) ? "" : "none";
  }
  function add(a) {
    if (seen.has(a.id)) return;
    seen.add(a.id);
    const tr = document.createElement("tr");
    tr.className = "alert new";
    tr.dataset.id = a.id;
    tr.dataset.text = a.site + " " + a.cam + " " + a.rule;
    const img = document.createElement("img");
    img.className = "thumb";
    img.alt = "";
    img.src = a.crop;
    img.onerror = () => { img.style.visibility = "hidden"; };
    cell(tr, "").appendChild(img);
    cell(tr, new Date(a.ts).toISOString().replace("T", " ").slice(0, 19));
    cell(tr, a.site + " / " + a.cam);
    const link = document.createElement("a");
    link.href = "/alerts/" + encodeURIComponent(a.id);
    link.textContent = a.rule;
    cell(tr, "").appendChild(link);
    cell(tr, a.label);
    cell(tr, fmt(a.edge));
    cell(tr, fmt(a.cloud));
    cell(tr, fmt(a.fused));
    cell(tr, a.verdict, "verdict " + a.verdict);
    cell(tr, a.latency_ms + " ms");
    applyFilter(tr);
    body.insertBefore(tr, body.firstChild);
    while (body.rows.length > 200) body.deleteRow(body.rows.length - 1);
  }
  filter.addEventListener("input", () => Array.from(body.rows).forEach(applyFilter));
  const source = new EventSource("/live/stream");
  source.onopen = () => { state.textContent = "connected"; state.dataset.state = "open"; };
  source.onerror = () => { state.textContent = "reconnecting"; state.dataset.state = "error"; };
  source.addEventListener("alert", (e) => add(JSON.parse(e.data)));
})();
