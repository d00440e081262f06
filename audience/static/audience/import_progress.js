// Polls the import job's JSON status and moves the progress bar until the job is finished.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const root = document.getElementById("import-job");
  if (!root || root.dataset.finished === "true") return;
  const bar = document.getElementById("import-progress");
  const text = (id, value) => { document.getElementById(id).textContent = value; };
  const poll = async () => {
    let job;
    try {
      const response = await fetch(root.dataset.statusUrl, { headers: { Accept: "application/json" }, credentials: "same-origin" });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      job = await response.json();
    } catch (error) {
      text("import-stage", ` (cannot reach the server: ${error.message}; retrying)`);
      window.setTimeout(poll, 3000);
      return;
    }
    bar.value = job.progress;
    text("import-percent", Math.round(job.progress));
    text("import-status", job.status_label);
    text("import-stage", job.stage ? ` (${job.stage})` : "");
    for (const cell of root.querySelectorAll("[data-count]")) cell.textContent = job[cell.dataset.count].toLocaleString();
    const error = document.getElementById("import-error");
    error.textContent = job.error;
    error.hidden = !job.error;
    if (job.finished) {
      document.getElementById("import-contacts-link").hidden = false;
      // Reload once to list the problems found.
      if (job.invalid_count || job.warning_count) window.location.reload();
      return;
    }
    window.setTimeout(poll, 1000);
  };
  poll();
});
