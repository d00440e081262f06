// The periodic-task page: under the crontab choice, say in words when the chosen crontab fires.
"use strict";
(function () {
  const source = document.getElementById("readable-crontabs");
  const select = document.getElementById("id_crontab");
  if (!source || !select) return;
  const readable = JSON.parse(source.textContent);
  const help = document.querySelector(".field-crontab .help");
  const original = document.getElementById("crontab-help").dataset.help || "";
  const translation = document.querySelector(".field-crontab_translation");
  if (translation) translation.hidden = true;
  function show() {
    if (!help) return;
    const words = readable[select.value];
    help.textContent = words ? original + " — " + words : original;
  }
  select.addEventListener("change", show);
  show();
})();
