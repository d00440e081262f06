// Draws the pages' charts with plotly.js from JSON the server puts in each .chart-data element's
// data-chart attribute, and redraws them when htmx swaps in fresh data. Not a <script> element:
// htmx drops those from swapped-in content. No inline code: the pages run under a strict CSP.
"use strict";
(function () {
  const COLORS = { sent: "#1f5fa8", delivered: "#237a3b", read: "#6b3fa0", failed: "#b3261e" };
  const FONT = { family: "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif", size: 13, color: "#1b1f24" };

  function baseLayout(extra) {
    return Object.assign(
      {
        autosize: true,
        margin: { l: 64, r: 16, t: 8, b: 56 },
        font: FONT,
        paper_bgcolor: "#ffffff",
        plot_bgcolor: "#ffffff",
        legend: { orientation: "h", y: -0.2 },
        xaxis: { gridcolor: "#e3e6ea" },
        yaxis: { gridcolor: "#e3e6ea", rangemode: "tozero", fixedrange: true },
      },
      extra || {},
    );
  }

  function axis(title) {
    return { gridcolor: "#e3e6ea", rangemode: "tozero", fixedrange: true, title: { text: title } };
  }

  function lines(data, kinds) {
    return kinds.map((kind) => ({
      type: "scatter",
      mode: "lines+markers",
      name: kind,
      x: data.x,
      y: data[kind],
      line: { color: COLORS[kind], width: 2 },
      marker: { size: 4 },
    }));
  }

  // One bucket either side, so a campaign that fits in one hour still gets a readable time axis.
  function paddedRange(x, seconds) {
    if (!x.length) return undefined;
    const times = x.map((value) => Date.parse(value));
    const pad = (seconds || 3600) * 1000;
    return [new Date(Math.min(...times) - pad).toISOString(), new Date(Math.max(...times) + pad).toISOString()];
  }

  const BUILDERS = {
    rate: (data) => [
      lines(data, ["sent", "failed"]),
      baseLayout({
        xaxis: { type: "date", gridcolor: "#e3e6ea", title: { text: "Time (UTC)" } },
        yaxis: axis("Messages a minute"),
      }),
    ],
    timeline: (data) => [
      lines(data, data.kinds || ["sent", "delivered", "read", "failed"]),
      baseLayout({
        xaxis: {
          type: "date",
          gridcolor: "#e3e6ea",
          range: paddedRange(data.x, data.bucket_seconds),
          title: { text: "Time (UTC)" },
        },
        yaxis: axis(data.y_title || "Messages"),
      }),
    ],
    funnel: (data) => [
      [{ type: "bar", x: data.labels, y: data.values, marker: { color: "#1f5fa8" }, text: data.values, textposition: "auto" }],
      baseLayout({ showlegend: false, yaxis: axis("Recipients") }),
    ],
  };

  function draw(holder) {
    const target = document.getElementById(holder.dataset.target);
    const build = BUILDERS[holder.dataset.kind];
    const json = holder.dataset.chart;
    if (!target || !build || !json || typeof window.Plotly === "undefined") return;
    const [traces, layout] = build(JSON.parse(json));
    // react() updates a drawn chart in place, so a refresh does not flicker.
    window.Plotly.react(target, traces, layout, { displayModeBar: false, responsive: true });
    target.dataset.drawn = "true";
  }

  // Every chart of the page: a swap may replace the element it was triggered on (outerHTML), and
  // react() is cheap.
  function drawAll() {
    document.querySelectorAll(".chart-data").forEach(draw);
  }

  document.addEventListener("DOMContentLoaded", drawAll);
  document.addEventListener("htmx:afterSettle", drawAll);
})();
