// stem-context labelling page: plain JavaScript, no build step, nothing loaded from elsewhere.
// Every change is sent at once (in order, one request after the other) and saved by the server before it
// answers; the page keeps no state the server does not have, so a reload or a closed tab loses nothing.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const TOKEN_KEY = "stem-context-labelling-token";
  const S = {
    token: null, me: null, config: null, image: null, sites: [], byId: new Map(), selected: null,
    mode: "image", view: { scale: 1, x0: 0, y0: 0 }, base: null, adjusted: null,
    contrast: { black: 0, white: 255, gamma: 0 }, suggestions: null, others: null,
    order: [], patchPos: 0, queue: Promise.resolve(), pending: 0, error: null, drag: null,
  };
  let NO_COLUMN = -1;

  // ------------------------------------------------------------------ server
  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function api(method, path, body, raw) {
    const headers = {};
    if (S.token) headers.Authorization = "Bearer " + S.token;
    const init = { method, headers };
    if (raw !== undefined) { headers["Content-Type"] = "application/octet-stream"; init.body = raw; }
    else if (body !== undefined) { headers["Content-Type"] = "application/json"; init.body = JSON.stringify(body); }
    if (method !== "GET") init.keepalive = raw === undefined;  // a change sent as the tab closes still arrives
    let r;
    try { r = await fetch(path, init); }
    catch (e) { throw new ApiError(0, "the server cannot be reached (is `python -m labelling serve` running?)"); }
    let data = null;
    try { data = await r.json(); } catch (e) { data = null; }
    if (!r.ok) throw new ApiError(r.status, (data && data.error) || r.statusText);
    return data;
  }

  // writes go one after the other, in the order they were made (a label, then its undo)
  function enqueue(fn) {
    S.pending += 1;
    showStatus();
    const p = S.queue.then(fn).then(
      (v) => { S.pending -= 1; S.error = null; showStatus(); return v; },
      (e) => { S.pending -= 1; S.error = e.message; showStatus(); throw e; });
    S.queue = p.catch(() => {});
    return p;
  }

  function showStatus(message) {
    const st = $("status");
    st.classList.toggle("error", !!S.error);
    if (message) st.textContent = message;
    else if (S.error) st.textContent = "not saved: " + S.error;
    else st.textContent = S.pending ? `saving… (${S.pending})` : "all changes saved";
  }

  function fail(e) {
    S.error = e.message;
    showStatus();
    if (e.status === 401) { logout(); return; }
    if (S.image && e.status !== 409) reloadSites();  // back in step with what the server holds
  }

  // ------------------------------------------------------------------ start, login, routing
  async function start() {
    S.config = await api("GET", "/api/config");
    NO_COLUMN = S.config.no_column;
    const params = new URLSearchParams(location.search);
    const linkToken = params.get("token");
    if (linkToken) {
      localStorage.setItem(TOKEN_KEY, linkToken);
      params.delete("token");  // out of the address bar, history and screenshots
      const rest = params.toString();
      history.replaceState(null, "", location.pathname + (rest ? "?" + rest : "") + location.hash);
    }
    S.token = localStorage.getItem(TOKEN_KEY);
    if (S.token) {
      try { S.me = await api("GET", "/api/me"); }
      catch (e) { if (e.status === 401) { S.token = null; localStorage.removeItem(TOKEN_KEY); } else throw e; }
    }
    buildPalette();
    if (!S.me) return showLogin();
    $("who").textContent = "annotator: " + S.me.name;
    $("logout").hidden = false;
    window.addEventListener("hashchange", route);
    route();
  }

  function showOnly(id) {
    for (const v of ["login-view", "list-view", "label-view"]) $(v).hidden = v !== id;
  }

  function showLogin() {
    showOnly("login-view");
    $("login-form").hidden = !S.config.login_by_name;
    $("login-hint").hidden = !S.config.login_by_name;
    $("login-token-only").hidden = S.config.login_by_name;
    $("login-name").focus();
  }

  $("login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    try {
      const r = await api("POST", "/api/login",
                          { name: $("login-name").value.trim(), password: $("login-password").value });
      localStorage.setItem(TOKEN_KEY, r.token);
      location.reload();
    } catch (err) { $("login-error").textContent = err.message; }
  });

  function logout() {
    localStorage.removeItem(TOKEN_KEY);
    location.hash = "";
    location.reload();
  }
  $("logout").addEventListener("click", logout);

  function route() {
    const h = new URLSearchParams(location.hash.slice(1));
    const id = parseInt(h.get("image"), 10);
    if (Number.isFinite(id)) openImage(id, h.get("mode") === "patch" ? "patch" : "image").catch(fail);
    else showList().catch(fail);
  }

  // ------------------------------------------------------------------ image list and upload
  function contextText(c) {
    const host = c.host ? c.host + (c.dopant ? "+" + c.dopant : "") : "host ?";
    return `${host} ${c.beam_energy_kev ? c.beam_energy_kev + " keV" : "? keV"} ${c.detector || "detector ?"}`;
  }

  async function showList() {
    S.image = null;
    showOnly("list-view");
    const r = await api("GET", "/api/images");
    const body = $("image-table").querySelector("tbody");
    body.innerHTML = "";
    for (const img of r.images) {
      const tr = document.createElement("tr");
      tr.className = "image-row";
      tr.dataset.imageId = img.id;
      const cells = [img.name, contextText(img.context), `${img.width} × ${img.height}`,
        `${img.progress.labelled} of ${img.progress.total} labelled`, img.finished ? "finished" : ""];
      for (const text of cells) {
        const td = document.createElement("td");
        td.textContent = text;
        tr.appendChild(td);
      }
      tr.addEventListener("click", () => { location.hash = "image=" + img.id; });
      body.appendChild(tr);
    }
    if (!r.images.length) body.innerHTML = "<tr><td colspan=5>No images yet: add one below or with <code>python -m labelling add</code>.</td></tr>";
  }

  $("upload-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const file = $("upload-file").files[0];
    $("upload-error").textContent = "";
    if (!file) return;
    if (file.size > S.config.max_upload_bytes) {
      $("upload-error").textContent = `${file.name} is ${(file.size / 1048576).toFixed(1)} MiB: over the server's limit of ${(S.config.max_upload_bytes / 1048576).toFixed(0)} MiB`;
      return;
    }
    const q = new URLSearchParams({ filename: file.name });
    for (const [key, id] of [["host", "upload-host"], ["dopant", "upload-dopant"], ["energy_kev", "upload-energy"], ["detector", "upload-detector"]]) {
      if ($(id).value.trim()) q.set(key, $(id).value.trim());
    }
    try {
      $("upload-error").textContent = "adding…";
      await api("POST", "/api/images/upload?" + q, undefined, file);
      $("upload-error").textContent = "";
      await showList();
    } catch (err) { $("upload-error").textContent = err.message; }
  });

  // ------------------------------------------------------------------ opening an image
  async function openImage(id, mode) {
    showOnly("label-view");
    showStatus("loading…");
    S.image = await api("GET", `/api/images/${id}`);
    const headers = { Authorization: "Bearer " + S.token };
    const [sites, order, blob] = await Promise.all([
      api("GET", `/api/images/${id}/sites`),
      api("GET", `/api/images/${id}/patch-order`),
      fetch(`/api/images/${id}/display.png`, { headers }).then((r) => {
        if (!r.ok) throw new ApiError(r.status, "display image: " + r.statusText);
        return r.blob();
      }),
    ]);
    const bitmap = await createImageBitmap(blob);
    const base = document.createElement("canvas");
    base.width = bitmap.width;
    base.height = bitmap.height;
    const bctx = base.getContext("2d");
    bctx.drawImage(bitmap, 0, 0);
    S.base = bctx.getImageData(0, 0, base.width, base.height);
    S.adjusted = document.createElement("canvas");
    S.adjusted.width = base.width;
    S.adjusted.height = base.height;
    setSites(sites.sites);
    S.order = order.order;
    S.selected = null;
    S.suggestions = null;
    S.others = null;
    $("image-name").textContent = S.image.name;
    $("image-context").textContent = contextText(S.image.context);
    $("show-suggestions").checked = false;
    $("show-suggestions").disabled = !S.image.models.length;
    $("show-suggestions").parentElement.title = S.image.models.length
      ? "shows the model's classes; recorded with the consensus (it can anchor your judgement)"
      : "no model predictions for this image";
    $("suggestion-model").hidden = true;
    $("show-others").checked = false;
    $("show-others").disabled = !S.image.finished;
    $("finish").disabled = S.image.finished;
    $("finish").textContent = S.image.finished ? "finished" : "finish image";
    setProgress(sites.progress);
    S.fitted = false;
    setMode(mode, false);
    applyContrast();
    S.error = null;
    showStatus();
  }

  function setSites(list) {
    S.sites = list;
    S.byId = new Map(list.map((s) => [s.id, s]));
  }

  async function reloadSites() {
    if (!S.image) return;
    const r = await api("GET", `/api/images/${S.image.id}/sites`);
    setSites(r.sites);
    setProgress(r.progress);
    redraw();
  }

  function setProgress(p) {
    S.progress = p;
    $("progress").textContent = `${p.labelled} of ${p.total} labelled`;
  }

  function localProgress() {
    let n = 0;
    for (const s of S.sites) if (s.label !== null && s.label !== undefined) n += 1;
    setProgress({ labelled: n, total: S.sites.length });
  }

  $("back").addEventListener("click", () => { location.hash = ""; });

  // ------------------------------------------------------------------ contrast
  function applyContrast() {
    if (!S.base) return;
    const { black, white, gamma } = S.contrast;
    const exponent = Math.pow(2, -gamma / 50);  // slider -100..100 -> gamma exponent 4..0.25
    const lut = new Uint8ClampedArray(256);
    for (let i = 0; i < 256; i++) {
      const t = Math.min(1, Math.max(0, (i - black) / Math.max(1, white - black)));
      lut[i] = Math.round(255 * Math.pow(t, exponent));
    }
    const src = S.base.data;
    const out = new ImageData(S.base.width, S.base.height);
    const d = out.data;
    for (let k = 0; k < src.length; k += 4) {
      const v = lut[src[k]];
      d[k] = v; d[k + 1] = v; d[k + 2] = v; d[k + 3] = 255;
    }
    S.adjusted.getContext("2d").putImageData(out, 0, 0);
    redraw();
  }

  for (const id of ["black", "white", "gamma"]) {
    $(id).addEventListener("input", () => {
      S.contrast[id] = parseInt($(id).value, 10);
      if (S.contrast.white <= S.contrast.black) {
        if (id === "black") { S.contrast.white = S.contrast.black + 1; $("white").value = S.contrast.white; }
        else { S.contrast.black = S.contrast.white - 1; $("black").value = S.contrast.black; }
      }
      applyContrast();
    });
  }
  $("contrast-reset").addEventListener("click", () => {
    S.contrast = { black: 0, white: 255, gamma: 0 };
    $("black").value = 0; $("white").value = 255; $("gamma").value = 0;
    applyContrast();
  });

  // ------------------------------------------------------------------ drawing the whole image
  function classColour(label) { return S.config.classes[label].colour; }
  function className(label) {
    if (label === null || label === undefined) return "not labelled";
    return label === NO_COLUMN ? "no column" : `${label} ${S.config.classes[label].name}`;
  }

  function markerRadius(scale) { return Math.max(3, 0.3 * S.image.nearest_column_px * scale); }

  function fitView() {
    const c = $("canvas");
    const W = c.clientWidth || 800, H = c.clientHeight || 600;
    const s = 0.96 * Math.min(W / S.image.width, H / S.image.height);
    S.view = { scale: s, x0: -0.5 - (W - S.image.width * s) / (2 * s), y0: -0.5 - (H - S.image.height * s) / (2 * s) };
    redraw();
  }

  function redraw() {
    if (!S.image) return;
    if (S.mode === "patch") renderPatch(); else draw();
  }

  function draw() {
    const c = $("canvas");
    const dpr = window.devicePixelRatio || 1;
    const W = c.clientWidth, H = c.clientHeight;
    if (c.width !== Math.round(W * dpr) || c.height !== Math.round(H * dpr)) {
      c.width = Math.round(W * dpr);
      c.height = Math.round(H * dpr);
    }
    const ctx = c.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, W, H);
    const { scale: s, x0, y0 } = S.view;
    ctx.imageSmoothingEnabled = s < 2;
    ctx.drawImage(S.adjusted, (-0.5 - x0) * s, (-0.5 - y0) * s, S.image.width * s, S.image.height * s);
    const r = markerRadius(s);
    for (const site of S.sites) {
      const X = (site.x - x0) * s, Y = (site.y - y0) * s;
      if (X < -r || Y < -r || X > W + r || Y > H + r) continue;
      drawMarker(ctx, site, X, Y, r, S.selected === site.id);
    }
    if (S.others) {
      for (const a of S.others.added) {
        const X = (a.x - x0) * s, Y = (a.y - y0) * s;
        ctx.fillStyle = a.label === null || a.label === NO_COLUMN ? "#bbb" : classColour(a.label);
        ctx.beginPath();
        ctx.moveTo(X, Y - r * 0.6); ctx.lineTo(X + r * 0.6, Y); ctx.lineTo(X, Y + r * 0.6); ctx.lineTo(X - r * 0.6, Y);
        ctx.closePath();
        ctx.fill();
      }
    }
    updateInfo();
  }

  function drawMarker(ctx, site, X, Y, r, selected) {
    ctx.save();
    if (site.label === null || site.label === undefined) {
      ctx.strokeStyle = "#ffe14d"; ctx.lineWidth = 1; ctx.setLineDash([3, 2]);
      ctx.beginPath(); ctx.arc(X, Y, r, 0, 2 * Math.PI); ctx.stroke();
    } else if (site.label === NO_COLUMN) {
      const q = r * 0.7;
      ctx.beginPath(); ctx.moveTo(X - q, Y - q); ctx.lineTo(X + q, Y + q); ctx.moveTo(X + q, Y - q); ctx.lineTo(X - q, Y + q);
      ctx.strokeStyle = "rgba(0, 0, 0, 0.75)"; ctx.lineWidth = 4.5; ctx.stroke();
      ctx.strokeStyle = "#ddd"; ctx.lineWidth = 2; ctx.stroke();
    } else {
      // a dark halo under the class colour: every class stays visible on bright and dark columns alike
      const lw = Math.max(2, r * 0.2);
      ctx.beginPath(); ctx.arc(X, Y, r, 0, 2 * Math.PI);
      ctx.strokeStyle = "rgba(0, 0, 0, 0.75)"; ctx.lineWidth = lw + 2.5; ctx.stroke();
      ctx.strokeStyle = classColour(site.label); ctx.lineWidth = lw; ctx.stroke();
      ctx.globalAlpha = 0.22; ctx.fillStyle = classColour(site.label); ctx.fill(); ctx.globalAlpha = 1;
    }
    ctx.setLineDash([]);
    if (site.added) {  // a column this annotator added
      ctx.strokeStyle = "#fff"; ctx.lineWidth = 1;
      ctx.beginPath(); ctx.moveTo(X + r, Y - r - 4); ctx.lineTo(X + r, Y - r + 4); ctx.moveTo(X + r - 4, Y - r); ctx.lineTo(X + r + 4, Y - r);
      ctx.stroke();
    }
    const sug = S.suggestions && S.suggestions[site.id];
    if (sug) {
      ctx.fillStyle = classColour(sug.label);
      ctx.beginPath(); ctx.arc(X, Y, Math.max(2, r * 0.28), 0, 2 * Math.PI); ctx.fill();
    }
    const votes = S.others && S.others.votes[site.id];
    if (votes) {
      let i = 0;
      const q = Math.max(3, r * 0.3);
      for (const name of S.others.annotators) {
        if (!(name in votes)) continue;
        const v = votes[name];
        ctx.fillStyle = v === NO_COLUMN ? "#bbb" : classColour(v);
        ctx.fillRect(X - r + i * (q + 1), Y + r + 2, q, q);
        i += 1;
      }
    }
    if (selected) {
      ctx.strokeStyle = "#fff"; ctx.lineWidth = 2;
      ctx.beginPath(); ctx.arc(X, Y, r + 4, 0, 2 * Math.PI); ctx.stroke();
    }
    ctx.restore();
  }

  function siteDescription(site) {
    const lines = [`site ${site.id}${site.added ? " (added by you)" : ""}: ${className(site.label)}`];
    const sug = S.suggestions && S.suggestions[site.id];
    if (sug) {
      const p = sug.probs ? ` (p = ${sug.probs[sug.label].toFixed(2)})` : "";
      lines.push(`model ${S.suggestions._model}: ${className(sug.label)}${p}`);
    }
    const votes = S.others && S.others.votes[site.id];
    if (votes) for (const [name, v] of Object.entries(votes)) lines.push(`${name}: ${className(v)}`);
    return lines;
  }

  function updateInfo() {
    const site = S.selected !== null ? S.byId.get(S.selected) : null;
    const info = $("info");
    info.textContent = "";
    if (!site || S.mode !== "image") return;
    for (const line of siteDescription(site)) {
      const div = document.createElement("div");
      div.textContent = line;
      info.appendChild(div);
    }
  }

  // ------------------------------------------------------------------ mouse on the whole image
  const canvas = $("canvas");
  function toImage(mx, my) { return { x: mx / S.view.scale + S.view.x0, y: my / S.view.scale + S.view.y0 }; }

  function zoomAt(mx, my, factor) {
    const p = toImage(mx, my);
    const s = Math.min(200, Math.max(0.02, S.view.scale * factor));
    S.view = { scale: s, x0: p.x - mx / s, y0: p.y - my / s };
    draw();
  }

  canvas.addEventListener("wheel", (e) => {
    e.preventDefault();
    zoomAt(e.offsetX, e.offsetY, Math.exp(-e.deltaY * 0.0015));
  }, { passive: false });

  canvas.addEventListener("mousedown", (e) => {
    if (e.button !== 0) return;
    canvas.focus();
    S.drag = { x: e.offsetX, y: e.offsetY, x0: S.view.x0, y0: S.view.y0, moved: false };
  });
  canvas.addEventListener("mousemove", (e) => {
    if (!S.drag || !(e.buttons & 1)) return;
    const dx = e.offsetX - S.drag.x, dy = e.offsetY - S.drag.y;
    if (Math.hypot(dx, dy) > 4) S.drag.moved = true;
    if (S.drag.moved) {
      S.view.x0 = S.drag.x0 - dx / S.view.scale;
      S.view.y0 = S.drag.y0 - dy / S.view.scale;
      draw();
    }
  });
  canvas.addEventListener("mouseup", (e) => {
    const drag = S.drag;
    S.drag = null;
    if (!drag || drag.moved || e.button !== 0) return;
    const p = toImage(e.offsetX, e.offsetY);
    if (e.shiftKey) addSite(p.x, p.y);
    else select(nearestSite(p.x, p.y, 0.5 * S.image.nearest_column_px));
  });
  canvas.addEventListener("mouseleave", () => { S.drag = null; });
  window.addEventListener("resize", () => redraw());

  function nearestSite(x, y, maxDistance) {
    let best = null, bestD = maxDistance;
    for (const s of S.sites) {
      const d = Math.hypot(s.x - x, s.y - y);
      if (d <= bestD) { best = s; bestD = d; }
    }
    return best;
  }

  function select(site) {
    S.selected = site ? site.id : null;
    draw();
  }

  function nextUnlabelled() {
    const from = S.selected !== null ? S.byId.get(S.selected) : null;
    let best = null, bestD = Infinity;
    for (const s of S.sites) {
      if (s.label !== null && s.label !== undefined) continue;
      const d = from ? Math.hypot(s.x - from.x, s.y - from.y) : s.y * 1e6 + s.x;
      if (d < bestD) { best = s; bestD = d; }
    }
    if (!best) { showStatus("every site is labelled: finish the image when you are done"); return; }
    S.selected = best.id;
    const c = $("canvas");
    const s = S.view.scale;
    const X = (best.x - S.view.x0) * s, Y = (best.y - S.view.y0) * s;
    if (X < 0 || Y < 0 || X > c.clientWidth || Y > c.clientHeight) {
      S.view.x0 = best.x - c.clientWidth / (2 * s);
      S.view.y0 = best.y - c.clientHeight / (2 * s);
    }
    draw();
  }

  // ------------------------------------------------------------------ changes
  function currentSite() {
    if (S.mode === "patch") return S.byId.get(S.order[S.patchPos]) || null;
    return S.selected !== null ? S.byId.get(S.selected) || null : null;
  }

  function labelCurrent(label) {
    const site = currentSite();
    if (!S.image) return;
    if (!site) { showStatus("click a site first, then press 0–4"); return; }
    site.label = label;
    localProgress();
    const imageId = S.image.id;
    enqueue(() => api("PUT", `/api/images/${imageId}/sites/${site.id}/label`, { label }))
      .then((r) => { if (S.image && S.image.id === imageId) setProgress(r.progress); })
      .catch(fail);
    if (S.mode === "patch") advancePatch(); else draw();
  }

  function addSite(x, y) {
    const imageId = S.image.id;
    enqueue(() => api("POST", `/api/images/${imageId}/sites`, { x_px: x, y_px: y }))
      .then((r) => {
        if (!S.image || S.image.id !== imageId) return;
        S.sites.push(r.site);
        S.byId.set(r.site.id, r.site);
        S.order.push(r.site.id);
        S.selected = r.site.id;
        setProgress(r.progress);
        showStatus(`column added (site ${r.site.id}): press 0–4 to label it`);
        draw();
      })
      .catch(fail);
  }

  function undo() {
    if (!S.image) return;
    const imageId = S.image.id;
    enqueue(() => api("POST", `/api/images/${imageId}/undo`))
      .then((r) => {
        if (!S.image || S.image.id !== imageId) return;
        if (r.undone === "add") {
          S.sites = S.sites.filter((s) => s.id !== r.site_id);
          S.byId.delete(r.site_id);
          S.order = S.order.filter((id) => id !== r.site_id);
          if (S.selected === r.site_id) S.selected = null;
        } else {
          const site = S.byId.get(r.site_id);
          if (site) site.label = r.label;
          if (S.mode === "patch") { const k = S.order.indexOf(r.site_id); if (k >= 0) S.patchPos = k; }
          else S.selected = r.site_id;
        }
        setProgress(r.progress);
        showStatus(`undone: site ${r.site_id} is ${className(r.label)}`);
        redraw();
      })
      .catch((e) => { if (e.status === 409) { S.error = null; showStatus(e.message); } else fail(e); });
  }

  // ------------------------------------------------------------------ patch by patch
  function setMode(mode, updateHash = true) {
    S.mode = mode;
    $("canvas").hidden = mode !== "image";
    $("patch-pane").hidden = mode !== "patch";
    $("help-image").hidden = mode !== "image";
    $("help-patch").hidden = mode !== "patch";
    $("mode-image").classList.toggle("active", mode === "image");
    $("mode-patch").classList.toggle("active", mode === "patch");
    if (updateHash && S.image) history.replaceState(null, "", `#image=${S.image.id}${mode === "patch" ? "&mode=patch" : ""}`);
    if (mode === "patch") {
      $("info").textContent = "";
      const k = S.order.findIndex((id) => { const s = S.byId.get(id); return s && (s.label === null || s.label === undefined); });
      S.patchPos = k >= 0 ? k : 0;
      $("patch-canvas").focus();
    } else {
      $("canvas").focus();
      if (!S.fitted) { fitView(); S.fitted = true; }
    }
    redraw();
  }
  $("mode-image").addEventListener("click", () => setMode("image"));
  $("mode-patch").addEventListener("click", () => setMode("patch"));

  function advancePatch() {
    const n = S.order.length;
    for (let step = 1; step <= n; step++) {
      const k = (S.patchPos + step) % n;
      const s = S.byId.get(S.order[k]);
      if (s && (s.label === null || s.label === undefined)) { S.patchPos = k; renderPatch(); return; }
    }
    renderPatch();
    showStatus("every site is labelled: finish the image when you are done");
  }

  function patchStep(delta) {
    const n = S.order.length;
    if (!n) return;
    S.patchPos = (S.patchPos + delta + n) % n;
    renderPatch();
  }

  function renderPatch() {
    const pc = $("patch-canvas");
    const ctx = pc.getContext("2d");
    const W = pc.width;
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, W, W);
    const site = currentSite();
    const info = $("patch-info");
    info.textContent = "";
    if (!site) { info.textContent = "no sites on this image"; return; }
    const hw = S.image.patch_half_width_px;
    const scale = W / (2 * hw);
    ctx.imageSmoothingEnabled = false;
    // pixel i of the image covers [i - 0.5, i + 0.5]: canvas pixel i covers [i, i + 1]
    ctx.drawImage(S.adjusted, site.x + 0.5 - hw, site.y + 0.5 - hw, 2 * hw, 2 * hw, 0, 0, W, W);
    // ticks around the centre (not over it: the column must stay visible)
    const c = W / 2, r = 0.35 * S.image.nearest_column_px * scale;
    ctx.strokeStyle = site.label === null || site.label === undefined ? "#ffe14d"
      : site.label === NO_COLUMN ? "#aaa" : classColour(site.label);
    ctx.lineWidth = 3;
    ctx.beginPath();
    for (const [dx, dy] of [[1, 0], [-1, 0], [0, 1], [0, -1]]) {
      ctx.moveTo(c + dx * r, c + dy * r);
      ctx.lineTo(c + dx * (r + 14), c + dy * (r + 14));
    }
    ctx.stroke();
    ctx.lineWidth = 6;
    ctx.strokeRect(3, 3, W - 6, W - 6);
    const lines = [[`site ${S.patchPos + 1} of ${S.order.length}`, "big"], [`your label: ${className(site.label)}`, ""]];
    for (const line of siteDescription(site).slice(1)) lines.push([line, ""]);
    lines.push([`${S.progress.labelled} of ${S.progress.total} labelled`, ""]);
    lines.push([`window √3·a = ${(2 * hw).toFixed(1)} px`, "hint"]);
    for (const [text, cls] of lines) {
      const div = document.createElement("div");
      div.textContent = text;
      if (cls) div.className = cls;
      info.appendChild(div);
    }
  }

  // ------------------------------------------------------------------ palette and keys
  function buildPalette() {
    const pal = $("palette");
    pal.textContent = "";
    for (const c of S.config.classes) {
      const b = document.createElement("button");
      b.className = "class-button";
      b.dataset.label = c.label;
      b.style.borderColor = c.colour;
      b.title = `${c.description} (key ${c.key})`;
      b.textContent = `${c.key} ${c.name}`;
      b.addEventListener("click", () => { labelCurrent(c.label); });
      pal.appendChild(b);
    }
  }
  $("none-button").addEventListener("click", () => labelCurrent(NO_COLUMN));
  $("undo").addEventListener("click", () => undo());

  document.addEventListener("keydown", (e) => {
    if ($("label-view").hidden || !S.image) return;
    const t = e.target;
    if (t && (t.tagName === "SELECT" || (t.tagName === "INPUT" && !["checkbox", "range"].includes(t.type)))) return;
    const key = e.key;
    if (t && t.type === "range" && key.startsWith("Arrow")) return;  // the arrows move the contrast slider
    if ((e.ctrlKey || e.metaKey) && key.toLowerCase() === "z") { e.preventDefault(); undo(); return; }
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (/^[0-9]$/.test(key)) {
      e.preventDefault();
      const label = parseInt(key, 10);
      if (label < S.config.classes.length) labelCurrent(label);
      return;
    }
    if (key === "x" || key === "Delete" || key === "Backspace") { e.preventDefault(); labelCurrent(NO_COLUMN); }
    else if (key === "u") undo();
    else if (key === "p") setMode(S.mode === "image" ? "patch" : "image");
    else if (S.mode === "image") {
      const c = $("canvas");
      if (key === "n") nextUnlabelled();
      else if (key === "f") fitView();
      else if (key === "Escape") select(null);
      else if (key === "+" || key === "=") zoomAt(c.clientWidth / 2, c.clientHeight / 2, 1.25);
      else if (key === "-") zoomAt(c.clientWidth / 2, c.clientHeight / 2, 0.8);
    } else if (key === "ArrowRight") { e.preventDefault(); patchStep(1); }
    else if (key === "ArrowLeft") { e.preventDefault(); patchStep(-1); }
  });

  // ------------------------------------------------------------------ suggestions, finishing, the others
  async function loadSuggestions() {
    const model = $("suggestion-model").hidden ? "" : $("suggestion-model").value;
    const r = await api("GET", `/api/images/${S.image.id}/suggestions` + (model ? "?model=" + encodeURIComponent(model) : ""));
    S.suggestions = Object.assign({ _model: r.model }, r.suggestions);
    const sel = $("suggestion-model");
    if (sel.options.length !== r.models.length) {
      sel.textContent = "";
      for (const m of r.models) { const o = document.createElement("option"); o.textContent = m; sel.appendChild(o); }
    }
    sel.value = r.model;
    sel.hidden = r.models.length < 2;
    redraw();
  }
  $("show-suggestions").addEventListener("change", (e) => {
    if (e.target.checked) loadSuggestions().catch((err) => { e.target.checked = false; fail(err); });
    else { S.suggestions = null; $("suggestion-model").hidden = true; redraw(); }
  });
  $("suggestion-model").addEventListener("change", () => loadSuggestions().catch(fail));

  $("finish").addEventListener("click", async () => {
    const missing = S.progress.total - S.progress.labelled;
    if (missing > 0 && !window.confirm(`${missing} of ${S.progress.total} sites are not labelled yet. Finish anyway?`)) return;
    try {
      await S.queue;  // every change first
      await api("POST", `/api/images/${S.image.id}/finish`, { force: missing > 0 });
      S.image.finished = true;
      $("finish").disabled = true;
      $("finish").textContent = "finished";
      $("show-others").disabled = false;
      showStatus("finished: you may now show the other annotators' labels");
    } catch (err) { fail(err); }
  });

  $("show-others").addEventListener("change", async (e) => {
    if (!e.target.checked) { S.others = null; redraw(); return; }
    try { S.others = await api("GET", `/api/images/${S.image.id}/others`); redraw(); }
    catch (err) { e.target.checked = false; fail(err); }
  });

  window.addEventListener("beforeunload", (e) => {
    if (S.pending > 0) { e.preventDefault(); e.returnValue = ""; }  // changes still on their way
  });

  // hooks for tests and the console: where a site is on the canvas, and whether every change is saved
  window.labelApp = {
    state: S,
    siteOnCanvas(id) {
      const s = S.byId.get(id);
      return s ? { x: (s.x - S.view.x0) * S.view.scale, y: (s.y - S.view.y0) * S.view.scale } : null;
    },
    imageToCanvas(x, y) { return { x: (x - S.view.x0) * S.view.scale, y: (y - S.view.y0) * S.view.scale }; },
    saved() { return S.pending === 0 && !S.error; },
  };

  start().catch((e) => {
    document.body.insertAdjacentHTML("beforeend", "<p class='error' id='fatal'></p>");
    $("fatal").textContent = "cannot start: " + e.message;
  });
})();
