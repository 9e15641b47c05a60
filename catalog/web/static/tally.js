// The web catalog's only script: search as you type and the entity picker of score pages.
// Server mode asks api/search (the catalog's own ranking); the static build ranks over the
// index in search-index.js. Results are built with textContent, never as HTML.
(function () {
  "use strict";
  var body = document.body;
  var prefix = body.getAttribute("data-prefix") || "";
  var mode = body.getAttribute("data-mode");
  var FACETS = ["owner", "tag", "kind", "status", "contract"];
  var latest = 0;

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function render(hits, total) {
    var list = document.getElementById("hits");
    var summary = document.getElementById("summary");
    list.textContent = "";
    hits.forEach(function (h) {
      var item = el("li", "hit");
      var link = el("a", "hit-name", h.name);
      link.setAttribute("href", prefix + h.href);
      item.appendChild(link);
      item.appendChild(document.createTextNode(" "));
      item.appendChild(el("span", "badge kind-" + h.kind, h.kind));
      if (h.status) item.appendChild(el("span", "badge status-" + h.status, h.status));
      item.appendChild(el("span", "owner", h.owner || ""));
      item.appendChild(el("span", "models", h.model_count + (h.model_count === 1 ? " model" : " models")));
      item.appendChild(el("div", "description", h.description));
      list.appendChild(item);
    });
    summary.textContent = hits.length ? hits.length + " of " + total + " matches"
      : "no matches; try fewer words or fewer filters";
  }

  function filters(form) {
    var out = {};
    FACETS.forEach(function (f) {
      var field = form.elements[f];
      if (field && field.value) out[f] = field.value;
    });
    return out;
  }

  // -- the static build's ranking: the rules of tally search, over the page's index --
  function words(text) { return (text.toLowerCase().match(/[a-z0-9]+/g) || []).slice(0, 12); }

  function within(a, b, limit) {  // edit distance of a and b is at most limit
    if (Math.abs(a.length - b.length) > limit) return false;
    var prev = [], i, j;
    for (j = 0; j <= b.length; j++) prev[j] = j;
    for (i = 1; i <= a.length; i++) {
      var cur = [i], best = i;
      for (j = 1; j <= b.length; j++) {
        cur[j] = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
        best = Math.min(best, cur[j]);
      }
      if (best > limit) return false;
      prev = cur;
    }
    return prev[b.length] <= limit;
  }

  function fieldMatch(word, terms) {  // 3 a term, 2 a prefix, 1 a typo, 0 none
    var best = 0;
    terms.forEach(function (t) {
      if (t === word) best = 3;
      else if (best < 2 && t.indexOf(word) === 0) best = 2;
    });
    if (best || /^[0-9]+$/.test(word) || word.length < 4) return best;
    var limit = word.length >= 8 ? 2 : 1;
    return terms.some(function (t) { return within(word, t, limit); }) ? 1 : 0;
  }

  function facetOk(e, f) {
    if (f.owner && !(e.owner || "").toLowerCase().split(",").some(function (o) {
      o = o.trim(); return o === f.owner.toLowerCase() || o.split("@")[0] === f.owner.toLowerCase();
    })) return false;
    if (f.tag && e.tags.indexOf(f.tag) < 0) return false;
    if (f.kind && e.kind !== f.kind) return false;
    if (f.status && (e.status || "none") !== f.status) return false;
    if (f.contract && e.contract.indexOf(f.contract) < 0) return false;
    return true;
  }

  function rankLocal(query, f) {
    var qs = words(query), all = [], any = [];
    (window.TALLY_INDEX || []).forEach(function (e) {
      if (!facetOk(e, f)) return;
      var nameTerms = words(e.name + " " + e.aliases.join(" "));
      var text = words(e.description + " " + e.tags.join(" "));
      var inName = 0, inText = 0, hit = 0;
      qs.forEach(function (w) {
        var n = fieldMatch(w, nameTerms), t = n ? 0 : fieldMatch(w, text);
        if (n || t) hit += 1;
        inName += n; inText += t;
      });
      var row = {e: e, exact: e.name === query.trim().toLowerCase() ? 1 : 0, name: inName,
                 text: inText, certified: e.status === "certified" ? 1 : 0,
                 deprecated: e.status === "deprecated" ? 1 : 0};
      if (hit === qs.length) all.push(row); else if (hit) any.push(row);
    });
    var rows = all.length ? all : any;
    rows.sort(function (a, b) {
      return (b.exact - a.exact) || (a.deprecated - b.deprecated) || (b.name - a.name) ||
        (b.certified - a.certified) || (b.text - a.text) || (a.e.name < b.e.name ? -1 : 1);
    });
    return {hits: rows.slice(0, 50).map(function (r) { return r.e; }), total: rows.length};
  }

  function search(form) {
    var query = form.elements.q.value, f = filters(form);
    if (mode === "static") {
      var found = rankLocal(query, f);
      render(found.hits, found.total);
      return;
    }
    var params = new URLSearchParams(f);
    params.set("q", query);
    var asked = ++latest;
    fetch(prefix + "api/search?" + params.toString())
      .then(function (r) { return r.json().then(function (data) { return {ok: r.ok, data: data}; }); })
      .then(function (res) {
        if (asked !== latest) return;  // a later query's answer wins, whatever the order
        if (res.ok) render(res.data.hits, res.data.total);
        else document.getElementById("summary").textContent = res.data.error;
      });
  }

  var form = document.getElementById("search-form");
  if (form) {
    var pending = null;
    var later = function () { clearTimeout(pending); pending = setTimeout(function () { search(form); }, 120); };
    form.elements.q.addEventListener("input", later);
    FACETS.forEach(function (f) { if (form.elements[f]) form.elements[f].addEventListener("change", later); });
    form.addEventListener("submit", function (ev) { if (mode === "static") { ev.preventDefault(); search(form); } });
    if (mode === "static") search(form);
  }

  var picker = document.getElementById("explain-form");
  if (picker) {
    picker.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var key = picker.elements.entity.value.trim();
      if (key) window.location.href = prefix + "score/" + picker.getAttribute("data-score") +
        "/explain/" + encodeURIComponent(key) + ".html";
    });
  }
})();
