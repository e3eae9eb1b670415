// radloggerd live dashboard: plain JS, no external assets.  Data comes from /events
// (server-sent events read with fetch, so the bearer token can be sent as a header).
"use strict";
(function () {
  const $ = (s) => document.querySelector(s);
  const el = (tag, attrs, text) => {
    const e = document.createElement(tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const SVG = "http://www.w3.org/2000/svg";
  const svgEl = (tag, attrs, text) => {
    const e = document.createElementNS(SVG, tag);
    for (const k in attrs || {}) e.setAttribute(k, attrs[k]);
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const fmt = (x) => {
    if (x === null || x === undefined) return "";
    if (typeof x !== "number") return String(x);
    const a = Math.abs(x);
    if (a !== 0 && (a >= 1e6 || a < 1e-3)) return x.toExponential(3);
    return Number.isInteger(x) ? x.toLocaleString("en") : x.toFixed(a >= 100 ? 1 : 3);
  };
  const safeId = (s) => String(s).replace(/[^A-Za-z0-9_-]/g, "_");

  // ------------------------------------------------------------------ token and connection
  const hashToken = new URLSearchParams(location.hash.slice(1)).get("token");
  if (hashToken) sessionStorage.setItem("radlogger-token", hashToken);
  let token = sessionStorage.getItem("radlogger-token") || "";
  const state = { ran: {}, counts: {}, rates: {}, lastT: 0, waterfall: {}, product: "",
                  intTimes: {}, payloads: 0 };
  window.radlogger = state; // for tests and curious users

  function setConn(s) { const c = $("#conn"); c.textContent = s; c.dataset.state = s; }

  $("#login").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("#token").value.trim();
    sessionStorage.setItem("radlogger-token", token);
    $("#login").hidden = true;
    connect();
  });

  let retry = null;
  async function connect() {
    clearTimeout(retry);
    setConn("connecting");
    const headers = token ? { Authorization: "Bearer " + token } : {};
    let resp;
    try {
      resp = await fetch("/events", { headers: headers, cache: "no-store" });
    } catch (e) {
      setConn("offline"); retry = setTimeout(connect, 2000); return;
    }
    if (resp.status === 401) {
      setConn("unauthorized");
      $("#login").hidden = false;
      $("#login-msg").textContent = token ? "wrong token" : "this daemon needs a token";
      return;
    }
    if (!resp.ok || !resp.body) { setConn("offline"); retry = setTimeout(connect, 2000); return; }
    setConn("live");
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let buf = "";
    try {
      for (;;) {
        const r = await reader.read();
        if (r.done) break;
        buf += dec.decode(r.value, { stream: true });
        let i;
        while ((i = buf.indexOf("\n\n")) >= 0) {
          const chunk = buf.slice(0, i); buf = buf.slice(i + 2);
          const data = chunk.split("\n").filter((l) => l.startsWith("data: "))
            .map((l) => l.slice(6)).join("\n");
          if (data) render(JSON.parse(data));
        }
      }
    } catch (e) { /* connection lost: retried below */ }
    setConn("offline");
    retry = setTimeout(connect, 2000);
  }

  // ------------------------------------------------------------------ rendering
  function render(p) {
    state.payloads += 1;
    const comps = p.status.components.filter((c) => c.name !== p.viewer);
    const byName = {};
    for (const c of comps) byName[c.name] = c;
    const dt = state.lastT ? p.t - state.lastT : 0;
    for (const [t, e] of Object.entries(p.view.topics)) {
      const before = state.counts[t];
      if (dt > 0 && before !== undefined) state.rates[t] = (e.count - before) / dt;
      state.counts[t] = e.count;
    }
    state.lastT = p.t;
    const q = p.status.queue;
    $("#summary").textContent = `${comps.filter((c) => c.role === "device").length} devices, ` +
      `${comps.filter((c) => c.role === "endpoint").length} endpoints, queue ${q.depth}/${q.capacity}` +
      (p.status.ok ? "" : `, ${p.status.components.filter((c) => c.problem).length} problem(s)`);
    renderGraph(p, byName);
    renderCards(p, comps);
    renderInstruments(p, comps);
    renderTopics(p);
  }

  function shownState(c) {
    if (c.role !== "device") return c.state;
    if (c.state === "running" || c.state === "finished") { state.ran[c.name] = true; return c.state; }
    if (state.ran[c.name] && ["connecting", "backoff", "error"].includes(c.state)) return "reconnecting";
    return c.state;
  }

  function lossDrops(p, c) {
    const by = (c.counters && c.counters.dropped_by_reason) || {};
    return Object.entries(by).filter(([r, n]) => n && !p.by_design.includes(r));
  }

  // ---------------------------------------------------------------- the graph
  let graphKey = "";
  function renderGraph(p, byName) {
    const viewerId = "endpoint:" + p.viewer;
    const nodes = p.graph.nodes.filter((n) => n.id !== viewerId);
    const ids = new Set(nodes.map((n) => n.id));
    const edges = p.graph.edges.filter(([a, b]) => ids.has(a) && ids.has(b));
    const key = nodes.map((n) => n.id).join("|") + "#" + edges.length;
    const box = $("#graph");
    if (key !== graphKey) {
      graphKey = key;
      const depth = {};
      const parents = {};
      for (const n of nodes) parents[n.id] = [];
      for (const [a, b] of edges) parents[b].push(a);
      const visit = (id, seen) => {
        if (depth[id] !== undefined) return depth[id];
        if (seen.has(id)) return 0;
        seen.add(id);
        const d = parents[id].length ? 1 + Math.max(...parents[id].map((x) => visit(x, seen))) : 0;
        depth[id] = d; return d;
      };
      for (const n of nodes) visit(n.id, new Set());
      const cols = {};
      for (const n of nodes) (cols[depth[n.id]] = cols[depth[n.id]] || []).push(n);
      const W = 180, H = 38, GX = 50, GY = 10;
      const pos = {};
      let maxRows = 0;
      Object.keys(cols).forEach((d) => {
        cols[d].forEach((n, i) => { pos[n.id] = [10 + d * (W + GX), 10 + i * (H + GY)]; });
        maxRows = Math.max(maxRows, cols[d].length);
      });
      const ncols = Object.keys(cols).length;
      const svg = svgEl("svg", { width: 20 + ncols * (W + GX), height: 20 + maxRows * (H + GY),
                                 id: "graph-svg" });
      for (const [a, b] of edges) {
        const [x1, y1] = pos[a], [x2, y2] = pos[b];
        svg.appendChild(svgEl("path", { class: "edge", "data-from": a, "data-to": b,
          d: `M${x1 + W},${y1 + H / 2} C${x1 + W + GX / 2},${y1 + H / 2} ${x2 - GX / 2},${y2 + H / 2} ${x2},${y2 + H / 2}` }));
      }
      for (const n of nodes) {
        const [x, y] = pos[n.id];
        const g = svgEl("g", { class: "node n-" + n.kind, id: "node-" + safeId(n.id),
                               transform: `translate(${x},${y})` });
        g.appendChild(svgEl("rect", { width: W, height: H, rx: 5 }));
        g.appendChild(svgEl("text", { x: 6, y: 15 }, n.label.length > 28 ? n.label.slice(0, 27) + "…" : n.label));
        g.appendChild(svgEl("text", { x: 6, y: 30, class: "sub" }, ""));
        const title = svgEl("title", {}, n.label);
        g.appendChild(title);
        svg.appendChild(g);
      }
      box.replaceChildren(svg);
    }
    const inboxes = p.inboxes || {};
    for (const n of nodes) {
      const g = document.getElementById("node-" + safeId(n.id));
      if (!g) continue;
      const sub = g.querySelector("text.sub");
      const [role, name] = [n.id.split(":")[0], n.id.slice(n.id.indexOf(":") + 1)];
      let text = "", bad = false;
      const c = byName[name];
      if (role === "topic") {
        const r = state.rates[name];
        text = r !== undefined ? `${fmt(r)}/s` : (state.counts[name] ? "" : "idle");
      } else if (c) {
        const drops = lossDrops(p, c);
        bad = drops.length > 0;
        if (c.role === "device") text = `${shownState(c)} ${fmt(c.rates.produced || 0)}/s`;
        else {
          const size = inboxes[name] || 0;
          const fill = size ? Math.round(100 * (c.counters.inbox_depth || 0) / size) : 0;
          text = `${c.state} ${fmt(c.rates.received || 0)}/s inbox ${fill}%`;
        }
        if (bad) text += " drop " + drops.map(([r, k]) => `${r}=${k}`).join(",");
      }
      sub.textContent = text;
      sub.classList.toggle("drop", bad);
      g.classList.toggle("problem", bad || !!n.problem || !!(c && c.problem));
    }
    for (const path of box.querySelectorAll("path.edge")) {
      const from = path.dataset.from, to = path.dataset.to;
      const t = from.startsWith("topic:") ? from.slice(6) : (to.startsWith("topic:") ? to.slice(6) : "");
      path.classList.toggle("busy", (state.rates[t] || 0) > 0);
      const c = byName[to.slice(to.indexOf(":") + 1)];
      path.classList.toggle("dropping", !!(c && lossDrops(p, c).length));
    }
  }

  // ---------------------------------------------------------------- component cards
  function renderCards(p, comps) {
    const box = $("#cards");
    for (const c of comps) {
      const id = "comp-" + safeId(c.name);
      let card = document.getElementById(id);
      if (!card) {
        card = el("div", { id: id, class: "card component", "data-name": c.name, "data-role": c.role });
        box.appendChild(card);
      }
      const shown = shownState(c);
      card.dataset.state = shown;
      card.classList.toggle("problem", !!c.problem || lossDrops(p, c).length > 0);
      const parts = [];
      const head = el("h3", {}, `${c.name} `);
      head.appendChild(el("span", { class: "badge state", "data-state": shown }, shown));
      head.appendChild(el("span", { class: "sub" }, ` ${c.kind} · ${Math.round(c.in_state_s)} s`));
      parts.push(head);
      const kv = el("div", { class: "kv" });
      const keys = c.role === "device" ? ["produced", "published", "dropped"] :
        ["received", "handled", "dropped"];
      for (const k of keys) {
        const s = el("span", { class: "counter", "data-key": k });
        s.appendChild(el("b", {}, k + " "));
        s.appendChild(document.createTextNode(fmt(c.counters[k] || 0) +
          (c.rates[k] ? ` (${fmt(c.rates[k])}/s)` : "")));
        kv.appendChild(s);
      }
      for (const [k, v] of Object.entries(c.own || {})) {
        const s = el("span", { class: "own" });
        s.appendChild(el("b", {}, k + " "));
        s.appendChild(document.createTextNode(fmt(v)));
        kv.appendChild(s);
      }
      parts.push(kv);
      if (c.role === "endpoint") {
        const size = (p.inboxes || {})[c.name] || 1;
        const bar = el("div", { class: "bar", title: `inbox ${c.counters.inbox_depth || 0}/${size}` });
        bar.appendChild(el("i", { style: `width:${Math.min(100, 100 * (c.counters.inbox_depth || 0) / size)}%` }));
        parts.push(bar);
      }
      const by = (c.counters && c.counters.dropped_by_reason) || {};
      for (const [r, n] of Object.entries(by)) {
        if (!n) continue;
        parts.push(el("div", { class: "drop" + (p.by_design.includes(r) ? " by-design" : "") },
          `dropped ${r.replace(/_/g, " ")}: ${fmt(n)}` + (p.by_design.includes(r) ? " (by design)" : "")));
      }
      if (c.problem) parts.push(el("div", { class: "err" }, "!! " + c.problem));
      if (c.last_error) parts.push(el("div", { class: "err" }, `last error ${c.last_error_at}: ${c.last_error}`));
      card.replaceChildren(...parts);
    }
  }

  // ---------------------------------------------------------------- instruments
  function panel(id, title) {
    let box = document.getElementById(id);
    if (!box) {
      box = el("div", { id: id, class: "card panel" });
      box.appendChild(el("h3", {}, title));
      $("#panels").appendChild(box);
    }
    return box;
  }

  function canvasIn(box, id, h) {
    let c = document.getElementById(id);
    if (!c) {
      c = el("canvas", { id: id, width: 480, height: h });
      box.appendChild(c);
    }
    return c;
  }

  function drawLine(cv, ys, x0, x1, xunit, yunit) {
    const ctx = cv.getContext("2d");
    const W = cv.width, H = cv.height, L = 44, B = 18;
    ctx.fillStyle = "#0b0e13"; ctx.fillRect(0, 0, W, H);
    if (!ys.length) return;
    let lo = Math.min(...ys), hi = Math.max(...ys);
    if (hi - lo < 1e-9) { hi += 1; lo -= 1; }
    const pad = (hi - lo) * 0.05; lo -= pad; hi += pad;
    ctx.strokeStyle = "#2b3442"; ctx.fillStyle = "#8a96a8"; ctx.font = "10px sans-serif";
    for (let i = 0; i <= 4; i++) {
      const y = 4 + (H - B - 8) * i / 4;
      ctx.beginPath(); ctx.moveTo(L, y); ctx.lineTo(W, y); ctx.stroke();
      ctx.fillText(fmt(hi - (hi - lo) * i / 4), 2, y + 3);
    }
    for (let i = 0; i <= 4; i++) {
      const x = L + (W - L - 4) * i / 4;
      ctx.fillText(fmt(x0 + (x1 - x0) * i / 4), Math.min(x - 10, W - 40), H - 4);
    }
    ctx.fillText(`${xunit} / ${yunit}`, W - 80, 12);
    ctx.strokeStyle = "#58a6ff"; ctx.lineWidth = 1.5; ctx.beginPath();
    ys.forEach((v, i) => {
      const x = L + (W - L - 4) * i / Math.max(1, ys.length - 1);
      const y = 4 + (H - B - 8) * (hi - v) / (hi - lo);
      if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    });
    ctx.stroke();
  }

  function heat(v) { // 0..1 -> a dark-blue-yellow ramp
    const t = Math.max(0, Math.min(1, v));
    return [Math.round(255 * Math.min(1, t * 1.6)), Math.round(255 * t * t), Math.round(120 * (1 - t) + 40)];
  }

  function addWaterfallRow(cv, ys, lo, hi) {
    const ctx = cv.getContext("2d");
    const W = cv.width, H = cv.height;
    ctx.drawImage(cv, 0, 0, W, H - 1, 0, 1, W, H - 1);
    const row = ctx.createImageData(W, 1);
    for (let x = 0; x < W; x++) {
      const v = ys[Math.floor(x * ys.length / W)];
      const [r, g, b] = heat((v - lo) / (hi - lo || 1));
      row.data.set([r, g, b, 255], 4 * x);
    }
    ctx.putImageData(row, 0, 0);
  }

  function freqAxis(meta, n) {
    const f = Number(meta.rf_freq), bw = Number(meta.bandwidth || meta.sample_rate);
    if (f && bw) return [(f - bw / 2) / 1e6, (f + bw / 2) / 1e6, "MHz"];
    if (f) return [f / 1e6, f / 1e6, "MHz"];
    return [0, n, "bin"];
  }

  function renderInstruments(p, comps) {
    const arrays = p.view.arrays;
    for (const [topic, variants] of Object.entries(arrays)) {
      for (const [variant, s] of Object.entries(variants)) {
        if (variant) continue;
        if (s.unit !== "dBm" && !/spectrum_dbm$/.test(topic)) continue;
        const box = panel("spec-" + safeId(topic), `Spectrum ${topic}`);
        const [x0, x1, xu] = freqAxis(s.meta, s.array.length);
        const cv = canvasIn(box, "spectrum-" + safeId(topic), 200);
        cv.classList.add("spectrum");
        drawLine(cv, s.array, x0, x1, xu, s.unit || "dB");
        const wf = canvasIn(box, "waterfall-" + safeId(topic), 140);
        wf.classList.add("waterfall");
        const range = state.waterfall[topic] || [Math.min(...s.array), Math.max(...s.array)];
        state.waterfall[topic] = range;
        addWaterfallRow(wf, s.array, range[0], range[1]);
      }
    }
    // products: array topics whose arrays are told apart by metadata (WIDAR baselines)
    const products = [];
    state.productData = state.productData || {};
    for (const [topic, variants] of Object.entries(arrays)) {
      for (const [variant, s] of Object.entries(variants)) {
        if (!variant) continue;
        state.productData[topic + " " + variant] = s;
      }
    }
    for (const k of Object.keys(state.productData).sort()) products.push(k);
    if (products.length) {
      const box = panel("products", "Lag spectra (per product)");
      let sel = document.getElementById("product-select");
      if (!sel) {
        sel = el("select", { id: "product-select" });
        sel.addEventListener("change", () => {
          state.product = sel.value; state.picked = true; drawProduct();
        });
        box.appendChild(sel);
        box.appendChild(el("div", { id: "integration" }));
      }
      if (sel.options.length !== products.length) {
        sel.replaceChildren(...products.map((k) => el("option", { value: k }, k)));
        if (!state.picked || !products.includes(state.product)) {
          state.product = products.find((k) => /_int /.test(k)) || products[0];
        }
        sel.value = state.product;
      }
      drawProduct();
      const integ = comps.filter((c) => c.kind === "integrate");
      const info = document.getElementById("integration");
      info.replaceChildren(...integ.map((c) => {
        const d = el("div", {}, `${c.name}: ${fmt(c.own.integrations || 0)} integrations, ${fmt(c.own.partial || 0)} open`);
        const outTopics = Object.keys(p.view.topics).filter((t) => /_int$/.test(t));
        for (const t of outTopics) {
          const last = p.view.topics[t];
          const times = state.intTimes[t] = state.intTimes[t] || [];
          if (!times.length || times[times.length - 1] !== last.t) times.push(last.t);
          if (times.length > 3) times.shift();
          const period = times.length > 1 ? times[times.length - 1] - times[times.length - 2] : 0;
          const frac = period ? Math.min(1, (p.t - last.t) / period) : 0;
          const bar = el("div", { class: "bar integration", title: `${t}: ${Math.round(frac * 100)}% of ~${fmt(period)} s` });
          bar.appendChild(el("i", { style: `width:${Math.round(frac * 100)}%` }));
          d.appendChild(bar);
        }
        return d;
      }));
    }
    // boards: pico devices and the farm, fed by their counters and their topics
    for (const c of comps) {
      if (c.role !== "device" || !/^pico/.test(c.kind)) continue;
      const box = panel("board-" + safeId(c.name), `Board ${c.name} (${c.kind})`);
      let body = box.querySelector(".body");
      if (!body) { body = el("div", { class: "body" }); box.appendChild(body); }
      const rows = [];
      const shown = shownState(c);
      const head = el("div", {}, "state ");
      head.appendChild(el("span", { class: "badge", "data-state": shown }, shown));
      rows.push(head);
      const kv = el("div", { class: "kv" });
      for (const [k, v] of Object.entries(c.own || {})) kv.appendChild(el("span", {}, `${k} ${fmt(v)}`));
      rows.push(kv);
      const table = el("table", { class: "evaluations" });
      table.appendChild(el("tr", {}, "")).replaceChildren(
        ...["time", "topic", "value", "evaluation", "ok"].map((h) => el("th", {}, h)));
      const recent = [];
      for (const [t, items] of Object.entries(p.view.recent)) {
        if (!t.startsWith(c.name + ".")) continue;
        for (const it of items) recent.push([t, it]);
      }
      recent.sort((a, b) => b[1].t - a[1].t);
      for (const [t, it] of recent.slice(0, 8)) {
        const tr = el("tr");
        tr.appendChild(el("td", {}, new Date(it.t * 1000).toLocaleTimeString()));
        tr.appendChild(el("td", {}, t.slice(c.name.length + 1)));
        tr.appendChild(el("td", {}, fmt(it.value)));
        tr.appendChild(el("td", {}, String((it.meta || {}).evaluation ?? "")));
        const ok = (it.meta || {}).ok;
        tr.appendChild(el("td", { class: ok === false ? "drop" : "" }, ok === undefined ? "" : String(ok)));
        table.appendChild(tr);
      }
      rows.push(table);
      body.replaceChildren(...rows);
    }
  }

  function drawProduct() {
    const s = (state.productData || {})[state.product];
    const box = document.getElementById("products");
    if (!s || !box) return;
    const cv = canvasIn(box, "product-canvas", 180);
    cv.classList.add("lagspectrum");
    drawLine(cv, s.array, 0, s.array.length, "channel", s.unit || "|X|");
  }

  // ---------------------------------------------------------------- topics
  function renderTopics(p) {
    const body = $("#topic-table tbody");
    const series = p.view.series;
    state.series = state.series || {};
    for (const [t, pts] of Object.entries(series)) {
      const have = state.series[t] = state.series[t] || [];
      const last = have.length ? have[have.length - 1][0] : 0;
      for (const pt of pts) if (pt[0] > last) have.push(pt);
      if (have.length > 300) have.splice(0, have.length - 300);
    }
    for (const t of Object.keys(p.view.topics).sort()) {
      const e = p.view.topics[t];
      const id = "topic-" + safeId(t);
      let tr = document.getElementById(id);
      if (!tr) {
        tr = el("tr", { id: id, "data-topic": t });
        tr.appendChild(el("td", {}, t));
        for (let i = 0; i < 3; i++) tr.appendChild(el("td", { class: i === 2 ? "val" : "" }));
        const td = el("td");
        td.appendChild(el("canvas", { class: "spark", width: 160, height: 28 }));
        tr.appendChild(td);
        const rows = [...body.children];
        const after = rows.find((r) => r.dataset.topic > t);
        body.insertBefore(tr, after || null);
      }
      const cells = tr.children;
      cells[1].textContent = state.rates[t] !== undefined ? fmt(state.rates[t]) : "";
      cells[2].textContent = fmt(e.count);
      cells[3].textContent = "value" in e ? `${fmt(e.value)} ${e.unit || ""}` :
        `${(e.shape || []).join("×")} ${e.dtype || ""} ${e.unit || ""}`;
      const pts = state.series[t];
      if (pts && pts.length > 1) {
        const cv = cells[4].firstChild, ctx = cv.getContext("2d");
        const ys = pts.map((q) => q[1]);
        const lo = Math.min(...ys), hi = Math.max(...ys), t0 = pts[0][0], t1 = pts[pts.length - 1][0];
        ctx.clearRect(0, 0, cv.width, cv.height);
        ctx.strokeStyle = "#3fb950"; ctx.beginPath();
        pts.forEach((q, i) => {
          const x = (cv.width - 2) * (q[0] - t0) / ((t1 - t0) || 1) + 1;
          const y = cv.height - 2 - (cv.height - 4) * (q[1] - lo) / ((hi - lo) || 1);
          if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
        });
        ctx.stroke();
      }
    }
  }

  connect();
})();
