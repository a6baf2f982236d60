// segcp view: draws the cases of the page (see segcp/report/viewer.py for the data layout).
(function () {
  "use strict";
  var meta = JSON.parse(document.getElementById("segcp-meta").textContent);
  var blobs = document.querySelectorAll("script.segcp-case");
  var cases = meta.cases;
  var BOX = 380; // longest side of a plane on screen, CSS pixels (2D: 1.6 times)
  var cache = new Map(); // case index -> promise of its decoded volumes (the last few kept)
  var state = { k: -1, slices: [], axis: 0, mode: "contour", hidden: new Set() };
  var planes = [];

  function product(a) { return a.reduce(function (x, y) { return x * y; }, 1); }
  function strides(shape) {
    var s = new Array(shape.length), acc = 1;
    for (var i = shape.length - 1; i >= 0; i--) { s[i] = acc; acc *= shape[i]; }
    return s;
  }

  function decode(k) {
    if (cache.has(k)) return cache.get(k);
    var c = cases[k];
    var p = (async function () {
      var text = atob(blobs[k].textContent.trim());
      var u8 = new Uint8Array(text.length);
      for (var i = 0; i < text.length; i++) u8[i] = text.charCodeAt(i);
      var stream = new Blob([u8]).stream().pipeThrough(new DecompressionStream("deflate"));
      var buf = new Uint8Array(await new Response(stream).arrayBuffer());
      var n = product(c.shape), ch = c.image ? (c.rgb ? 3 : 1) : 0, nb = meta.bytes;
      if (buf.length !== n * ch + n * nb) throw new Error(c.id + ": " + buf.length + " bytes, expected " + (n * ch + n * nb));
      var raw = buf.slice(n * ch).buffer;
      var lab = nb === 1 ? new Uint8Array(raw) : nb === 2 ? new Uint16Array(raw) : new Uint32Array(raw);
      return { img: buf.subarray(0, n * ch), ch: ch, lab: lab, n: n };
    })();
    cache.set(k, p);
    if (cache.size > 4) cache.delete(cache.keys().next().value);
    return p;
  }

  function planeAxes(c) { return c.shape.length === 3 ? [0, 1, 2] : [null]; }
  function others(c, a) { return a === null ? [0, 1] : [0, 1, 2].filter(function (x) { return x !== a; }); }
  function spacing(c, a) { return (c.spacing ? c.spacing[a] : 1) * c.full[a] / c.shape[a]; }

  function buildPlanes(c) {
    var box = document.getElementById("planes");
    box.textContent = "";
    planes = planeAxes(c).map(function (a) {
      var fig = document.createElement("figure");
      fig.className = "plane";
      var canvas = document.createElement("canvas");
      var slider = document.createElement("input");
      slider.type = "range"; slider.min = 0; slider.step = 1;
      var cap = document.createElement("figcaption");
      fig.appendChild(canvas);
      if (a !== null) { fig.appendChild(slider); } else { slider.hidden = true; }
      fig.appendChild(cap);
      box.appendChild(fig);
      var pl = { axis: a, fig: fig, canvas: canvas, slider: slider, cap: cap, ink: [] };
      slider.addEventListener("input", function () { state.axis = a; state.slices[a] = +slider.value; show(); });
      canvas.addEventListener("click", function (ev) { pick(pl, ev); });
      return pl;
    });
  }

  function pick(pl, ev) {
    var c = cases[state.k], o = others(c, pl.axis), r = pl.canvas.getBoundingClientRect();
    var col = Math.floor((ev.clientX - r.left) / r.width * c.shape[o[1]]);
    var row = Math.floor((ev.clientY - r.top) / r.height * c.shape[o[0]]);
    if (pl.axis !== null) {
      state.axis = pl.axis;
      state.slices[o[0]] = Math.max(0, Math.min(c.shape[o[0]] - 1, row));
      state.slices[o[1]] = Math.max(0, Math.min(c.shape[o[1]] - 1, col));
    }
    show();
  }

  function draw(pl, c, d) {
    var o = others(c, pl.axis), rows = c.shape[o[0]], cols = c.shape[o[1]], st = strides(c.shape);
    var base = pl.axis === null ? 0 : state.slices[pl.axis] * st[pl.axis];
    var cv = pl.canvas, ctx = cv.getContext("2d");
    cv.width = cols; cv.height = rows;
    var h = rows * spacing(c, o[0]), w = cols * spacing(c, o[1]);
    var scale = (pl.axis === null ? 1.6 * BOX : BOX) / Math.max(h, w);
    cv.style.width = Math.round(w * scale) + "px"; cv.style.height = Math.round(h * scale) + "px";
    var im = ctx.createImageData(cols, rows), px = im.data, lab = new Uint32Array(rows * cols);
    for (var r = 0; r < rows; r++) {
      for (var q = 0; q < cols; q++) {
        var i = base + r * st[o[0]] + q * st[o[1]], t = 4 * (r * cols + q);
        if (d.ch === 3) { px[t] = d.img[3 * i]; px[t + 1] = d.img[3 * i + 1]; px[t + 2] = d.img[3 * i + 2]; }
        else if (d.ch === 1) { px[t] = px[t + 1] = px[t + 2] = d.img[i]; }
        px[t + 3] = 255;
        lab[r * cols + q] = d.lab[i];
      }
    }
    var layers = meta.layers, fill = state.mode !== "contour", line = state.mode !== "fill";
    pl.ink = layers.map(function () { return 0; });
    function edge(j, bit) {
      var r = (j / cols) | 0, q = j - r * cols;
      return r === 0 || q === 0 || r === rows - 1 || q === cols - 1 || !((lab[j - 1] >>> bit) & 1) || !((lab[j + 1] >>> bit) & 1)
        || !((lab[j - cols] >>> bit) & 1) || !((lab[j + cols] >>> bit) & 1);
    }
    for (var pass = 0; pass < 2; pass++) { // fills first, then every contour on top
      for (var L = 0; L < layers.length; L++) {
        var ly = layers[L], bit = ly.bit, col = ly.colour;
        if (state.hidden.has(L)) continue;
        for (var j = 0; j < lab.length; j++) {
          if (!((lab[j] >>> bit) & 1)) continue;
          var t2 = 4 * j;
          if (pass === 0) {
            pl.ink[L]++;
            if (fill && !ly.truth) for (var m = 0; m < 3; m++) px[t2 + m] = Math.round(0.6 * px[t2 + m] + 0.4 * col[m]);
          } else if ((line || ly.truth) && edge(j, bit)) {
            for (var m2 = 0; m2 < 3; m2++) px[t2 + m2] = col[m2];
          }
        }
      }
    }
    ctx.putImageData(im, 0, 0);
    pl.fig.classList.toggle("active", pl.axis === state.axis);
    if (pl.axis !== null) {
      pl.slider.max = c.shape[pl.axis] - 1; pl.slider.value = state.slices[pl.axis];
      pl.cap.textContent = "plane across axis " + pl.axis + ": slice " + (state.slices[pl.axis] + 1) + " / " + c.shape[pl.axis];
    } else {
      pl.cap.textContent = c.shape[0] + " × " + c.shape[1];
    }
  }

  async function show() {
    var k = state.k, c = cases[k], d = await decode(k);
    if (k !== state.k) return;
    planes.forEach(function (pl) { draw(pl, c, d); });
    var frag = "case=" + encodeURIComponent(c.id) + (c.shape.length === 3 ? "&axis=" + state.axis + "&slice=" + state.slices[state.axis] : "")
      + (state.mode !== "contour" ? "&mode=" + state.mode : "");
    if (!/(^|&)check(&|$)/.test(location.hash.slice(1))) history.replaceState(null, "", "#" + frag);
    var out = document.getElementById("segcp-state");
    out.textContent = JSON.stringify({ case: c.id, k: k, axis: state.axis, slices: state.slices, shape: c.shape,
      ink: planes.map(function (pl) { return pl.ink; }) });
    out.setAttribute("data-ready", "1");
  }

  function select(k, slices, axis) {
    var c = cases[k];
    if (k !== state.k || !planes.length) buildPlanes(c);
    state.k = k;
    state.slices = slices || c.centre.map(function (x, a) { return Math.max(0, Math.min(c.shape[a] - 1, Math.floor((x + 0.5) * c.shape[a] / c.full[a]))); });
    state.axis = axis === undefined ? (c.axis === null ? 0 : c.axis) : axis;
    document.getElementById("case-name").textContent = c.id + " (" + (k + 1) + " / " + cases.length + ")";
    document.querySelectorAll(".case-metrics").forEach(function (el, i) { el.hidden = i !== k; });
    document.querySelectorAll("#cases tbody tr").forEach(function (tr, i) { tr.classList.toggle("current", i === k); });
    return show();
  }

  function step(delta) {
    var c = cases[state.k];
    if (c.shape.length !== 3) return;
    var a = state.axis;
    state.slices[a] = Math.max(0, Math.min(c.shape[a] - 1, state.slices[a] + delta));
    show();
  }

  function fromHash() {
    var q = new URLSearchParams(location.hash.slice(1)), id = q.get("case");
    if (q.get("mode")) { state.mode = q.get("mode"); document.getElementById("mode").value = state.mode; }
    var k = id === null ? 0 : cases.findIndex(function (c) { return c.id === id; });
    if (k < 0) k = 0;
    var c = cases[k], axis = q.get("axis") === null ? undefined : +q.get("axis");
    var p = select(k, undefined, axis);
    if (c.shape.length === 3 && q.get("slice") !== null) {
      state.slices[state.axis] = Math.max(0, Math.min(c.shape[state.axis] - 1, +q.get("slice")));
      p = show();
    }
    return p;
  }

  async function check() { // decode and draw every case; count each label bit's voxels
    var out = { n: cases.length, loaded: 0, failed: [], counts: {} };
    for (var k = 0; k < cases.length; k++) {
      try {
        var d = await decode(k), counts = meta.layers.map(function () { return 0; });
        for (var i = 0; i < d.n; i++) {
          var v = d.lab[i];
          for (var L = 0; L < counts.length; L++) counts[L] += (v >>> meta.layers[L].bit) & 1;
        }
        out.counts[cases[k].id] = counts;
        await select(k);
        out.loaded++;
      } catch (e) {
        out.failed.push(cases[k].id + ": " + e);
      }
    }
    var pre = document.getElementById("segcp-check");
    pre.textContent = JSON.stringify(out);
    pre.hidden = false;
  }

  function legend() {
    var box = document.getElementById("legend");
    meta.layers.forEach(function (ly, L) {
      var lab = document.createElement("label"), cb = document.createElement("input"), sw = document.createElement("span");
      cb.type = "checkbox"; cb.checked = true;
      cb.addEventListener("change", function () { if (cb.checked) state.hidden.delete(L); else state.hidden.add(L); show(); });
      sw.className = "swatch"; sw.style.background = "rgb(" + ly.colour.join(",") + ")";
      lab.appendChild(cb); lab.appendChild(sw); lab.appendChild(document.createTextNode(ly.name));
      box.appendChild(lab);
    });
  }

  document.addEventListener("keydown", function (ev) {
    var tag = ev.target && ev.target.tagName;
    if (tag === "INPUT" || tag === "SELECT" || ev.altKey || ev.ctrlKey || ev.metaKey) return;
    if (ev.key === "ArrowUp" || ev.key === "ArrowRight") step(1);
    else if (ev.key === "ArrowDown" || ev.key === "ArrowLeft") step(-1);
    else if (ev.key === "PageDown") select(Math.min(cases.length - 1, state.k + 1));
    else if (ev.key === "PageUp") select(Math.max(0, state.k - 1));
    else return;
    ev.preventDefault();
  });
  document.getElementById("prev").addEventListener("click", function () { select(Math.max(0, state.k - 1)); });
  document.getElementById("next").addEventListener("click", function () { select(Math.min(cases.length - 1, state.k + 1)); });
  document.getElementById("mode").addEventListener("change", function (ev) { state.mode = ev.target.value; show(); });
  document.querySelectorAll("#cases tbody tr").forEach(function (tr, i) { tr.addEventListener("click", function () { select(i); }); });
  window.addEventListener("hashchange", fromHash);
  legend();
  if (/(^|&)check(&|$)/.test(location.hash.slice(1))) check(); else fromHash();
})();
