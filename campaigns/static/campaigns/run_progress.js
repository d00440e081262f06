// Refreshes the run progress bars of the campaign admin while their runs are active.
// Polls the admin's JSON view (one request for every active bar on the page), a little less
// often while nothing changes, and stops once no run on the page is running or paused.
(function () {
  "use strict";

  const FAST_MS = 2000;
  const SLOW_MS = 15000;

  function activeBars() {
    return Array.from(document.querySelectorAll('.run-progress[data-active="true"]'));
  }

  function update(bar, run) {
    bar.querySelectorAll("rect[data-part]").forEach(function (rect) {
      const part = run.parts.find(function (p) { return p.name === rect.dataset.part; });
      if (part) {
        rect.setAttribute("x", String(part.x));
        rect.setAttribute("width", String(part.width));
      }
    });
    const native = bar.querySelector("progress");
    if (native) {
      native.value = run.percent;
      native.textContent = run.percent + "%";
    }
    bar.querySelector(".run-percent").textContent = run.percent + "%";
    bar.querySelector(".run-text").textContent = "(" + run.text + ")";
    bar.dataset.active = run.active ? "true" : "false";
    // The runs table's row beside the bar shows the same figures.
    const row = bar.closest("tr");
    if (row) {
      COUNTED.forEach(function (name) {
        const cell = row.querySelector("td.field-" + name + " p");
        if (cell) cell.textContent = String(name === "status" ? run.status_label : run[name]);
      });
    }
  }

  const COUNTED = ["status", "total", "pending", "held", "sending", "sent", "skipped", "failed", "unknown"];

  function schedule(delay) {
    window.setTimeout(poll, delay);
  }

  let delay = FAST_MS;
  let last = "";

  function poll() {
    const bars = activeBars();
    if (!bars.length) return;
    const url = new URL(bars[0].dataset.url, window.location.href);
    const ids = new Set(bars.map(function (bar) { return bar.dataset.run; }));
    ids.forEach(function (id) { url.searchParams.append("run", id); });
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("progress " + response.status);
        return response.json();
      })
      .then(function (data) {
        const byId = new Map(data.runs.map(function (run) { return [String(run.id), run]; }));
        bars.forEach(function (bar) {
          const run = byId.get(bar.dataset.run);
          if (run) update(bar, run);
        });
        const seen = JSON.stringify(data.runs);
        delay = seen === last ? Math.min(delay * 2, SLOW_MS) : FAST_MS;
        last = seen;
        schedule(delay);
      })
      .catch(function () {
        schedule(SLOW_MS);
      });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (activeBars().length) schedule(FAST_MS);
  });
})();
