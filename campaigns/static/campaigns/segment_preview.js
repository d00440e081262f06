// Live audience count and sample for the segment admin form.
// Posts the query (or the JSON definition, when that is what was edited) to the preview API with
// the session cookie and the form's CSRF token; shows the count, a sample or the error with its caret.
(function () {
  "use strict";

  const DELAY_MS = 400;

  function element(tag, text, className) {
    const node = document.createElement(tag);
    if (text !== undefined) node.textContent = text;
    if (className) node.className = className;
    return node;
  }

  function renderError(box, message, excerpt) {
    box.replaceChildren(element("p", message, "errornote"));
    if (excerpt) box.appendChild(element("pre", excerpt, "segment-error"));
  }

  function renderSample(contacts) {
    const table = element("table", undefined, "segment-sample");
    const head = table.createTHead().insertRow();
    ["phone", "name", "consent", "attributes"].forEach(function (title) {
      head.appendChild(element("th", title));
    });
    const body = table.createTBody();
    contacts.forEach(function (contact) {
      const row = body.insertRow();
      const attributes = JSON.stringify(contact.attributes || {});
      [contact.phone, contact.name, contact.consent_status, attributes.slice(0, 120)].forEach(function (value) {
        row.insertCell().textContent = value;
      });
    });
    return table;
  }

  function renderResult(box, data) {
    const summary = element("p", undefined, "segment-count");
    summary.appendChild(element("strong", String(data.count)));
    summary.appendChild(document.createTextNode(" contacts match, " + data.opted_in + " of them opted in."));
    box.replaceChildren(summary);
    if (data.sample && data.sample.length) box.appendChild(renderSample(data.sample));
  }

  function firstError(data) {
    if (data && data.error) return data.error;
    const messages = data ? Object.values(data).flat() : [];
    return { message: messages.length ? String(messages[0]) : "The preview failed." };
  }

  function setUp(box) {
    const form = box.closest("form");
    const query = form.querySelector("#id_query");
    const definition = form.querySelector("#id_definition");
    const csrf = form.querySelector("input[name=csrfmiddlewaretoken]");
    let source = "query";
    let timer = null;
    let latest = 0;

    function payload() {
      if (source === "definition" || !query.value.trim()) {
        if (!definition.value.trim()) return null;
        try {
          return { definition: JSON.parse(definition.value) };
        } catch (error) {
          return { invalid: "The JSON definition is not valid JSON: " + error.message };
        }
      }
      return { query: query.value };
    }

    async function refresh() {
      const body = payload();
      if (body === null) return;
      if (body.invalid) return renderError(box, body.invalid);
      const ticket = ++latest;
      box.classList.add("segment-loading");
      try {
        const response = await fetch(box.dataset.url, {
          method: "POST",
          credentials: "same-origin",
          headers: { "Content-Type": "application/json", Accept: "application/json", "X-CSRFToken": csrf.value },
          body: JSON.stringify(body),
        });
        const data = await response.json().catch(function () { return null; });
        if (ticket !== latest) return; // a newer edit has been sent since
        if (response.ok) renderResult(box, data);
        else {
          const error = firstError(data);
          renderError(box, String(error.message).split("\n")[0], error.excerpt);
        }
      } catch (error) {
        if (ticket === latest) renderError(box, "The preview could not be loaded: " + error.message);
      } finally {
        if (ticket === latest) box.classList.remove("segment-loading");
      }
    }

    function schedule(from) {
      source = from;
      clearTimeout(timer);
      timer = setTimeout(refresh, DELAY_MS);
    }

    query.addEventListener("input", function () { schedule("query"); });
    definition.addEventListener("input", function () { schedule("definition"); });
  }

  document.addEventListener("DOMContentLoaded", function () {
    const box = document.getElementById("segment-preview");
    if (box) setUp(box);
  });
})();
