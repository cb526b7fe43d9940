// Triage console: send a correction to the feedback API and show where the ticket went.
// The agent key (if auth is on) travels in the HttpOnly console cookie, never in this script.
"use strict";
document.querySelectorAll("form.correct").forEach(function (form) {
  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    var id = form.dataset.ticket;
    var result = form.querySelector(".result");
    var button = form.querySelector("button");
    var category = form.elements.category.value;
    button.disabled = true;
    result.textContent = "saving…";
    try {
      var response = await fetch("/v1/tickets/" + encodeURIComponent(id) + "/feedback", {
        method: "POST",
        credentials: "same-origin",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ category: category }),
      });
      var body = await response.json();
      if (!response.ok) {
        var detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
        result.textContent = "error " + response.status + ": " + detail;
        result.className = "result error";
        return;
      }
      var row = form.closest("tr");
      row.querySelector(".category").textContent = body.category;
      row.querySelector(".status").textContent = body.status;
      row.classList.add("corrected");
      result.textContent = "moved to " + body.queue;
      result.className = "result ok";
    } catch (err) {
      result.textContent = "network error: " + err;
      result.className = "result error";
    } finally {
      button.disabled = false;
    }
  });
});
