// Weir console: the little the pages need a script for. Served as a file
// (the Content-Security-Policy allows no inline script) and never puts
// fetched text into the page as markup: only textContent and SVG attributes.
"use strict";

(function () {
  var SVG = "http://www.w3.org/2000/svg";
  // Geometry shared with crates/server/src/console/charts.rs.
  var WIDTH = 720, HEIGHT = 220, LEFT = 64, RIGHT = 8, BOTTOM = 24, TOP = 8;

  function rate(bytesPerS) {
    var units = ["B", "KiB", "MiB", "GiB", "TiB"];
    var v = Math.max(0, bytesPerS), u = 0;
    while (v >= 1024 && u + 1 < units.length) { v /= 1024; u += 1; }
    return (u === 0 ? Math.round(v) : v.toFixed(1)) + " " + units[u] + "/s";
  }

  function utc(ms) {
    return new Date(ms).toISOString().replace("T", " ").replace("Z", " UTC");
  }

  function el(name, attrs, text) {
    var node = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { node.setAttribute(k, String(attrs[k])); });
    if (text !== undefined) { node.textContent = text; }
    return node;
  }

  // Redraws the throughput chart's SVG and legend from the JSON points.
  function drawThroughput(figure, points) {
    var svg = figure.querySelector("svg");
    var legend = figure.querySelector("figcaption");
    if (!svg || !legend) { return; }
    var series = [
      { name: "in", values: points.map(function (p) { return [p.t_ms, p.bytes_in_per_s]; }) },
      { name: "out", values: points.map(function (p) { return [p.t_ms, p.bytes_out_per_s]; }) }
    ];
    var tMin = Infinity, tMax = -Infinity, vMax = 0;
    series.forEach(function (s) {
      s.values.forEach(function (p) {
        tMin = Math.min(tMin, p[0]); tMax = Math.max(tMax, p[0]); vMax = Math.max(vMax, p[1]);
      });
    });
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    var plotW = WIDTH - LEFT - RIGHT, plotH = HEIGHT - TOP - BOTTOM, y0 = TOP + plotH;
    svg.appendChild(el("line", { "class": "axis", x1: LEFT, y1: TOP, x2: LEFT, y2: y0 }));
    svg.appendChild(el("line", { "class": "axis", x1: LEFT, y1: y0, x2: LEFT + plotW, y2: y0 }));
    svg.appendChild(el("line", { "class": "grid", x1: LEFT, y1: TOP, x2: LEFT + plotW, y2: TOP }));
    svg.appendChild(el("text", { "class": "tick", x: LEFT - 6, y: TOP + 10, "text-anchor": "end" }, rate(vMax)));
    svg.appendChild(el("text", { "class": "tick", x: LEFT - 6, y: y0, "text-anchor": "end" }, "0"));
    if (tMin > tMax) {
      svg.appendChild(el("text", { "class": "empty", x: LEFT + plotW / 2, y: TOP + plotH / 2, "text-anchor": "middle" }, "No data yet"));
    } else {
      svg.appendChild(el("text", { "class": "tick", x: LEFT, y: HEIGHT }, utc(tMin)));
      svg.appendChild(el("text", { "class": "tick", x: WIDTH, y: HEIGHT, "text-anchor": "end" }, utc(tMax)));
      var spanT = Math.max(1, tMax - tMin), spanV = vMax > 0 ? vMax : 1;
      series.forEach(function (s, i) {
        var coords = s.values.map(function (p) {
          var x = tMax === tMin ? LEFT + plotW : LEFT + (p[0] - tMin) / spanT * plotW;
          var y = TOP + plotH - p[1] / spanV * plotH;
          return x.toFixed(1) + "," + y.toFixed(1);
        });
        if (coords.length === 1) {
          var xy = coords[0].split(",");
          svg.appendChild(el("circle", { "class": "s" + i, cx: xy[0], cy: xy[1], r: 3 }));
        } else {
          svg.appendChild(el("polyline", { "class": "line s" + i, points: coords.join(" ") }));
        }
      });
    }
    while (legend.firstChild) { legend.removeChild(legend.firstChild); }
    series.forEach(function (s, i) {
      var last = s.values.length ? rate(s.values[s.values.length - 1][1]) : "–";
      var key = document.createElement("span");
      key.className = "key s" + i;
      key.textContent = s.name + ": " + last;
      legend.appendChild(key);
      legend.appendChild(document.createTextNode(" "));
    });
  }

  function pollThroughput() {
    var holder = document.querySelector("[data-poll]");
    if (!holder || !window.fetch) { return; }
    var figure = holder.querySelector("figure");
    var url = holder.getAttribute("data-poll");
    function tick() {
      fetch(url, { headers: { "Accept": "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (body) { if (body && body.points) { drawThroughput(figure, body.points); } })
        .catch(function () { /* the next tick tries again */ });
    }
    tick();
    window.setInterval(tick, 2000);
  }

  // "Search this page": hides the rows that do not contain the text.
  function filterRows() {
    var input = document.querySelector("input[data-filter]");
    if (!input) { return; }
    var count = document.getElementById("find-count");
    input.addEventListener("input", function () {
      var needle = input.value.toLowerCase();
      var rows = document.querySelectorAll(input.getAttribute("data-filter"));
      var shown = 0;
      Array.prototype.forEach.call(rows, function (row) {
        var match = needle === "" || row.textContent.toLowerCase().indexOf(needle) !== -1;
        row.hidden = !match;
        if (match) { shown += 1; }
      });
      if (count) { count.textContent = needle === "" ? "" : shown + " of " + rows.length + " records match"; }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    pollThroughput();
    filterRows();
  });
})();
