// The console's own script: draws every <figure data-chart> with uPlot (the
// data is JSON in the attribute, so the pages need no inline script), also
// in fragments swapped in by htmx. Nothing else.
(function () {
  "use strict";
  function draw(el) {
    if (el.dataset.drawn || typeof uPlot === "undefined") return;
    var spec;
    try { spec = JSON.parse(el.dataset.chart); } catch (e) { return; }
    el.dataset.drawn = "1";
    var palette = ["#1f6fb2", "#d9534f", "#5cb85c", "#f0ad4e", "#6f42c1", "#20c997", "#795548"];
    // The legend's time label in the page's language (uPlot says "Time").
    var series = [{ label: document.documentElement.lang === "ko" ? "시각" : "Time" }];
    var data = [spec.x];
    (spec.series || []).forEach(function (s, i) {
      var color = palette[i % palette.length];
      var def = { label: s.label, stroke: color, width: 1.5 };
      if (spec.bars) {
        def.fill = color + "99";
        def.paths = uPlot.paths.bars({ size: [0.7, 60] });
        def.points = { show: false };
      }
      series.push(def);
      data.push(s.values);
    });
    var width = Math.max(320, Math.min(el.clientWidth || 900, 1100));
    // Times are Korea Standard Time, 24-hour, whatever the browser's zone.
    var tz = function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Asia/Seoul"); };
    var two = function (n) { return (n < 10 ? "0" : "") + n; };
    var step = spec.x.length > 1 ? spec.x[1] - spec.x[0] : 86400;
    var xAxis = {
      values: function (u, splits) {
        var span = u.scales.x.max - u.scales.x.min;
        return splits.map(function (v) {
          var d = tz(v);
          if (span > 2 * 86400 || step >= 86400) return (d.getMonth() + 1) + "/" + d.getDate();
          return two(d.getHours()) + ":" + two(d.getMinutes());
        });
      },
    };
    // Daily data: ticks on whole days only.
    if (step >= 86400) xAxis.incrs = [86400, 2 * 86400, 7 * 86400, 14 * 86400, 28 * 86400];
    var xScale = { time: true };
    // Half a step of room either side, so a lone bar is not a whole axis.
    if (spec.x.length) xScale.range = [spec.x[0] - step / 2, spec.x[spec.x.length - 1] + step / 2];
    new uPlot({
      width: width,
      height: 220,
      tzDate: tz,
      series: series,
      axes: [xAxis, { label: spec.unit || "" }],
      scales: { x: xScale },
    }, data, el);
  }
  function drawAll(root) {
    (root || document).querySelectorAll("figure[data-chart]").forEach(draw);
  }
  document.addEventListener("DOMContentLoaded", function () { drawAll(); });
  // After an outerHTML swap the event's target is the element replaced: look
  // over the whole page (drawn charts are skipped).
  document.addEventListener("htmx:afterSettle", function () { drawAll(); });
  window.addEventListener("load", function () { drawAll(); });
})();
