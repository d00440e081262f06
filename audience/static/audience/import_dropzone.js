// Drag-and-drop onto the import form's file input. No dependencies.
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  for (const zone of document.querySelectorAll(".import-dropzone")) {
    const input = document.getElementById(zone.dataset.input);
    const label = zone.querySelector(".import-dropzone-file");
    if (!input) continue;
    const show = () => {
      const file = input.files[0];
      label.textContent = file ? `${file.name} (${(file.size / 1048576).toFixed(1)} MB)` : "";
      zone.classList.toggle("has-file", Boolean(file));
    };
    const stop = (event) => { event.preventDefault(); event.stopPropagation(); };
    for (const name of ["dragenter", "dragover"]) {
      zone.addEventListener(name, (event) => { stop(event); zone.classList.add("dragging"); });
    }
    for (const name of ["dragleave", "drop"]) {
      zone.addEventListener(name, (event) => { stop(event); zone.classList.remove("dragging"); });
    }
    zone.addEventListener("drop", (event) => {
      if (!event.dataTransfer.files.length) return;
      const files = new DataTransfer();
      files.items.add(event.dataTransfer.files[0]);
      input.files = files.files;
      show();
    });
    zone.addEventListener("click", () => input.click());
    zone.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") { stop(event); input.click(); } });
    input.addEventListener("change", show);
  }
});
