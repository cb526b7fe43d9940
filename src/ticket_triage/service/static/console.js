// Triage console: confirm, correct, assign and finish tickets through the /v1 API, refresh the
// queue counts, signal new tickets, explain a routing, and drive it all from the keyboard.
// The agent's credential (if auth is on) travels in the HttpOnly console cookie, never in this
// script. Served from /static under script-src 'self': no inline code, no eval.
"use strict";
(function () {
  var POLL_MS = 15000;
  var labelHolder = document.querySelector("[data-labels]");
  var labels = labelHolder ? JSON.parse(labelHolder.dataset.labels || "[]") : [];
  var announcer = document.getElementById("announce");
  var busy = {}; // ticket id -> true while a request for it is in flight (no double submit)

  function announce(text) {
    if (!announcer) return;
    announcer.textContent = "";
    window.setTimeout(function () { announcer.textContent = text; }, 30);
  }

  // -- the API: JSON in and out; a 401 that names the sign-in page sends the agent there ------
  async function api(method, path, body) {
    var init = { method: method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    var response = await fetch(path, init);
    var data = null;
    try { data = await response.json(); } catch (err) { data = null; }
    if (response.status === 401) {
      var login = (data && data.login) || "/";
      window.location.assign(login + (login.indexOf("?") < 0 ? "?expired=1" : "&expired=1"));
      throw new Error("signed out");
    }
    return { ok: response.ok, status: response.status, body: data };
  }

  function detailOf(result) {
    var d = result.body && result.body.detail;
    if (typeof d === "string") return d;
    return d ? JSON.stringify(d) : "HTTP " + result.status;
  }

  // -- times in the agent's time zone, with the age -------------------------------------------
  var thisYear = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "numeric", minute: "2-digit" });
  var otherYear = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
  var relative = typeof Intl.RelativeTimeFormat === "function" ? new Intl.RelativeTimeFormat(undefined, { numeric: "auto" }) : null;
  var STEPS = [["year", 31536000], ["month", 2592000], ["week", 604800], ["day", 86400], ["hour", 3600], ["minute", 60]];

  function age(date) {
    var seconds = (date.getTime() - Date.now()) / 1000;
    if (!relative) return "";
    for (var i = 0; i < STEPS.length; i++) {
      if (Math.abs(seconds) >= STEPS[i][1]) return relative.format(Math.round(seconds / STEPS[i][1]), STEPS[i][0]);
    }
    return relative.format(0, "second");
  }

  function formatTimes(root) {
    (root || document).querySelectorAll("time[datetime]").forEach(function (el) {
      var date = new Date(el.getAttribute("datetime"));
      if (isNaN(date.getTime())) return;
      var format = date.getFullYear() === new Date().getFullYear() ? thisYear : otherYear;
      el.textContent = format.format(date);
      var ago = age(date);
      if (ago) el.textContent += " · " + ago;
      el.title = date.toISOString();
    });
  }

  // -- one ticket's elements (a list row and its expansion, or the ticket page) ---------------
  function containerOf(el) { return el.closest("[data-ticket]"); }
  function ticketId(el) { return containerOf(el).dataset.ticket; }
  function field(container, name) { return container.querySelector('[data-field="' + name + '"]'); }

  function setResult(container, text, ok) {
    var el = field(container, "result");
    if (!el) return;
    el.textContent = text;
    el.className = "result " + (ok ? "ok" : "error");
    announce("Ticket " + container.dataset.ticket + ": " + text);
  }

  function setBusy(container, on) {
    busy[container.dataset.ticket] = on;
    container.querySelectorAll("button[data-action], select[name=category]").forEach(function (el) {
      if (on) {
        el.dataset.wasDisabled = el.disabled ? "1" : "";
        el.disabled = true;
      } else {
        el.disabled = el.dataset.wasDisabled === "1";
      }
    });
    container.setAttribute("aria-busy", on ? "true" : "false");
  }

  function show(container, ticket) {
    var judged = ticket.status === "confirmed" || ticket.status === "corrected";
    container.dataset.category = ticket.category || "";
    container.dataset.feedbackCount = String(ticket.feedback.length);
    field(container, "agent-category").textContent = judged ? ticket.category : "—";
    var status = field(container, "status");
    status.textContent = ticket.status;
    status.className = "status status-" + ticket.status;
    var work = field(container, "work");
    work.textContent = ticket.work_state + (ticket.assignee ? " · " + ticket.assignee : "");
    work.className = "work work-" + ticket.work_state;
    var queue = field(container, "queue");
    if (queue) queue.textContent = ticket.queue;
    var select = container.querySelector("select[name=category]");
    if (select) select.value = ticket.category;
    container.querySelectorAll("button[data-action]").forEach(function (button) {
      var action = button.dataset.action;
      var disabled = false;
      if (action === "confirm") disabled = judged || !ticket.predicted_category;
      if (action === "correct") disabled = button.dataset.category === ticket.category;
      button.dataset.wasDisabled = disabled ? "1" : "";
    });
    // the model's category and confidence stay as they were: they are the model's, not the agent's
  }

  // -- actions ----------------------------------------------------------------------------------
  function noteOf(container) {
    var note = field(container, "note");
    return note && note.value.trim() ? note.value.trim() : null;
  }

  function requestFor(action, container, category) {
    var id = encodeURIComponent(container.dataset.ticket);
    var note = noteOf(container);
    var base = "/v1/tickets/" + id;
    switch (action) {
      case "confirm": return ["POST", base + "/confirm", { note: note }];
      case "correct": return ["POST", base + "/feedback", { category: category, note: note }];
      case "assign": return ["POST", base + "/work", { state: "assigned" }];
      case "done": return ["POST", base + "/work", { state: "done" }];
      case "reopen": return ["POST", base + "/work", { state: "open" }];
    }
    return null;
  }

  function describe(action, before, ticket) {
    if (action === "confirm" || action === "correct") {
      if (ticket.feedback.length === before) return "no change: already saved";
      if (ticket.status === "confirmed") return "confirmed " + ticket.category;
      return "moved to " + ticket.queue;
    }
    if (ticket.work_state === "assigned") return "assigned to " + ticket.assignee;
    return ticket.work_state === "done" ? "done" : "reopened";
  }

  async function act(container, action, category) {
    var id = container.dataset.ticket;
    if (busy[id]) return; // a second click or key press while the first is in flight
    if (action === "correct-select") {
      action = "correct";
      category = container.querySelector("select[name=category]").value;
    }
    if (action === "why") return explain(container);
    var req = requestFor(action, container, category);
    if (!req) return;
    var before = Number(container.dataset.feedbackCount || 0);
    setBusy(container, true);
    setResult(container, "saving…", true);
    try {
      var result = await api(req[0], req[1], req[2]);
      if (!result.ok) {
        setResult(container, "error " + result.status + ": " + detailOf(result), false);
        return;
      }
      show(container, result.body);
      setResult(container, describe(action, before, result.body), true);
      var note = field(container, "note");
      if (note && action !== "assign") note.value = "";
      refreshCounts();
    } catch (err) {
      if (err.message !== "signed out") setResult(container, "network error: " + err.message, false);
    } finally {
      setBusy(container, false);
    }
  }

  document.addEventListener("click", function (event) {
    var button = event.target.closest("button[data-action]");
    if (button && containerOf(button)) {
      event.preventDefault();
      act(containerOf(button), button.dataset.action, button.dataset.category);
    }
    var expand = event.target.closest("button.expand");
    if (expand) toggle(containerOf(expand));
  });

  // -- the expanded row: all of the text, the top categories, note and work buttons -----------
  function toggle(container, open) {
    var more = container.querySelector("tr.more");
    var button = container.querySelector("button.expand");
    if (!more || !button) return;
    var show = open === undefined ? more.hidden : open;
    more.hidden = !show;
    button.setAttribute("aria-expanded", show ? "true" : "false");
    button.textContent = show ? "▾" : "▸";
    container.classList.toggle("expanded", show);
  }

  // -- "Why?": the words that drove the decision, highlighted by attribution ------------------
  async function explain(container) {
    toggle(container, true);
    var text = field(container, "text");
    setBusy(container, true);
    setResult(container, "explaining…", true);
    try {
      var result = await api("GET", "/v1/tickets/" + encodeURIComponent(container.dataset.ticket) + "/explanation");
      if (!result.ok) {
        setResult(container, "no explanation: " + detailOf(result), false);
        return;
      }
      highlight(text, result.body);
      setResult(container, "words that pushed towards " + result.body.target + " are marked", true);
    } catch (err) {
      if (err.message !== "signed out") setResult(container, "network error: " + err.message, false);
    } finally {
      setBusy(container, false);
    }
  }

  function highlight(el, explanation) {
    var source = el.dataset.source || el.textContent;
    el.dataset.source = source;
    // The offsets count characters (Python code points); JS strings count UTF-16 units, which
    // differ past U+FFFF (emoji): slice an array of code points instead.
    var chars = Array.from(source);
    function cut(a, b) { return chars.slice(a, b).join(""); }
    var tokens = (explanation.tokens || []).filter(function (t) { return t.end > t.start; });
    var peak = tokens.reduce(function (m, t) { return Math.max(m, Math.abs(t.attribution)); }, 0) || 1;
    tokens.sort(function (a, b) { return a.start - b.start; });
    el.textContent = "";
    var at = 0;
    tokens.forEach(function (t) {
      if (t.start < at) return; // overlapping sub-words: the first one wins
      el.appendChild(document.createTextNode(cut(at, t.start)));
      var strength = Math.abs(t.attribution) / peak;
      var piece = cut(t.start, t.end);
      if (strength < 0.15) {
        el.appendChild(document.createTextNode(piece));
      } else {
        var mark = document.createElement("mark");
        mark.className = t.attribution > 0 ? "for" : "against";
        mark.textContent = piece;
        mark.title = (t.attribution > 0 ? "towards " : "against ") + explanation.target + ": " + t.attribution.toFixed(3);
        // CSSOM, not a style attribute: allowed under style-src 'self'
        mark.style.setProperty("--strength", strength.toFixed(2));
        mark.style.backgroundColor = t.attribution > 0
          ? "rgba(255, 196, 0, " + (0.2 + 0.7 * strength).toFixed(2) + ")"
          : "rgba(120, 170, 255, " + (0.2 + 0.6 * strength).toFixed(2) + ")";
        el.appendChild(mark);
      }
      at = t.end;
    });
    el.appendChild(document.createTextNode(cut(at)));
    var legend = el.parentNode.querySelector(".legend") || document.createElement("p");
    legend.className = "legend";
    legend.textContent = "Marked: words that pushed the model towards " + explanation.target + " (yellow) or away (blue); " +
      explanation.method + ", model " + explanation.model_version + (explanation.cached ? ", cached" : "") + ".";
    el.parentNode.insertBefore(legend, el.nextSibling);
  }

  // -- queue counts (open work) and the new-ticket signal ------------------------------------
  var section = document.querySelector("section.tickets");
  var latestId = section ? Number(section.dataset.latestId || 0) : 0;
  var watched = section ? section.dataset.queue : "";

  async function refreshCounts() {
    if (!document.querySelector("[data-queue-count]")) return;
    var result = await api("GET", "/v1/queues" + (latestId ? "?since=" + latestId : ""));
    if (!result.ok || !Array.isArray(result.body)) return;
    var fresh = 0;
    result.body.forEach(function (q) {
      var el = document.querySelector('[data-queue-count="' + CSS.escape(q.queue) + '"]');
      if (el) {
        el.textContent = String(q.count);
        el.title = q.count + " open of " + (q.total === undefined ? q.count : q.total);
      }
      if (!watched || q.queue === watched) fresh += q.new || 0; // this queue's, or all for a search
    });
    var banner = document.getElementById("new-tickets");
    if (banner && fresh > 0) {
      banner.hidden = false;
      banner.firstElementChild.textContent = fresh + " new ticket" + (fresh === 1 ? "" : "s") + ": show";
    }
  }

  if (section) {
    window.setInterval(function () {
      if (!document.hidden) refreshCounts().catch(function () {});
    }, POLL_MS);
  }

  // -- bulk select -------------------------------------------------------------------------------
  var bulk = document.getElementById("bulk");

  function selected() {
    return Array.prototype.map.call(document.querySelectorAll("input.select:checked"), function (box) {
      return Number(ticketId(box));
    });
  }

  function updateBulk() {
    if (!bulk) return;
    var ids = selected();
    bulk.hidden = ids.length === 0;
    document.getElementById("bulk-count").textContent = ids.length + " selected";
    document.querySelectorAll("tbody.ticket").forEach(function (tb) {
      tb.classList.toggle("selected", tb.querySelector("input.select").checked);
    });
  }

  document.addEventListener("change", function (event) {
    if (event.target.id === "select-all") {
      document.querySelectorAll("input.select").forEach(function (box) { box.checked = event.target.checked; });
    }
    if (event.target.matches("input.select, #select-all")) updateBulk();
  });

  if (bulk) {
    bulk.addEventListener("click", async function (event) {
      var button = event.target.closest("button[data-bulk]");
      if (!button || bulk.getAttribute("aria-busy") === "true") return;
      var body = { ids: selected(), action: button.dataset.bulk };
      if (body.action === "correct") body.category = document.getElementById("bulk-category").value;
      var out = document.getElementById("bulk-result");
      bulk.setAttribute("aria-busy", "true");
      bulk.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
      out.textContent = "working…";
      try {
        var result = await api("POST", "/v1/tickets/bulk", body);
        if (!result.ok) {
          out.textContent = "error " + result.status + ": " + detailOf(result);
          return;
        }
        var failed = result.body.results.filter(function (r) { return !r.ok; });
        out.textContent = (result.body.results.length - failed.length) + " done" +
          (failed.length ? ", " + failed.length + " failed: " + failed.map(function (r) { return "#" + r.id + " " + r.detail; }).join("; ") : "");
        announce(out.textContent);
        // The rows show their new state in place (as one ticket's action does); the selection
        // stays, for a next bulk action on the same tickets.
        await Promise.all(result.body.results.filter(function (r) { return r.ok; }).map(async function (r) {
          var container = document.querySelector('tbody.ticket[data-ticket="' + r.id + '"]');
          if (!container) return;
          var got = await api("GET", "/v1/tickets/" + encodeURIComponent(r.id));
          if (got.ok) show(container, got.body);
        }));
        refreshCounts();
      } catch (err) {
        if (err.message !== "signed out") out.textContent = "network error: " + err.message;
      } finally {
        bulk.removeAttribute("aria-busy");
        bulk.querySelectorAll("button").forEach(function (b) { b.disabled = false; });
      }
    });
  }

  // -- keyboard ----------------------------------------------------------------------------------
  var help = document.getElementById("help");
  var helpButton = document.getElementById("help-button");
  var current = -1;

  function tickets() { return Array.prototype.slice.call(document.querySelectorAll(".ticket[data-ticket]")); }

  function move(step) {
    var all = tickets();
    if (!all.length) return;
    current = Math.max(0, Math.min(all.length - 1, current + step));
    all.forEach(function (el, i) { el.classList.toggle("current", i === current); });
    var target = all[current].querySelector("tr.summary") || all[current];
    target.tabIndex = -1;
    target.focus();
    var line = all[current].querySelector(".line");
    announce("Ticket " + all[current].dataset.ticket + ", " + (current + 1) + " of " + all.length +
      (line ? ": " + line.textContent.slice(0, 80) : ""));
  }

  function currentTicket() {
    var all = tickets();
    if (all.length === 1) return all[0]; // the ticket page
    return current >= 0 ? all[current] : null;
  }

  function toggleHelp(open) {
    if (!help) return;
    var show = open === undefined ? help.hidden : open;
    help.hidden = !show;
    if (show) {
      document.getElementById("help-close").focus();
      announce("Keyboard shortcuts shown. Press Escape to close.");
    } else if (helpButton) {
      helpButton.focus();
    }
  }

  if (helpButton) helpButton.addEventListener("click", function () { toggleHelp(); });
  var helpClose = document.getElementById("help-close");
  if (helpClose) helpClose.addEventListener("click", function () { toggleHelp(false); });

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (event.key === "Escape") {
      if (help && !help.hidden) toggleHelp(false);
      return;
    }
    var typing = event.target.closest("input, select, textarea, [contenteditable]");
    if (typing) return;
    var key = event.key;
    if (key === "?") { event.preventDefault(); toggleHelp(); return; }
    if (help && !help.hidden) return;
    if (key === "j") { event.preventDefault(); move(1); return; }
    if (key === "k") { event.preventDefault(); move(-1); return; }
    if (key === "/") {
      var q = document.getElementById("q");
      if (q) { event.preventDefault(); q.focus(); }
      return;
    }
    var ticket = currentTicket();
    if (!ticket) return;
    if (/^[1-9]$/.test(key) && labels[Number(key) - 1]) {
      event.preventDefault();
      act(ticket, "correct", labels[Number(key) - 1]);
    } else if (key === "c") {
      event.preventDefault();
      act(ticket, "confirm");
    } else if (key === "a") {
      act(ticket, "assign");
    } else if (key === "d") {
      act(ticket, "done");
    } else if (key === "e") {
      toggle(ticket);
    } else if (key === "x") {
      var box = ticket.querySelector("input.select");
      if (box) { box.checked = !box.checked; updateBulk(); }
    } else if ((key === "Enter" || key === "o") && !event.target.closest("a, button")) {
      var open = ticket.querySelector("a.open");
      if (open) window.location.assign(open.href);
    }
  });

  // Blank filters stay out of the address (a shorter link to share; the server ignores them anyway).
  var search = document.getElementById("search");
  if (search) {
    search.addEventListener("submit", function () {
      search.querySelectorAll("input, select").forEach(function (el) {
        if (!el.value || (el.name === "sort" && el.value === "newest")) el.disabled = true;
      });
      window.setTimeout(function () {
        search.querySelectorAll("input, select").forEach(function (el) { el.disabled = false; });
      }, 0);
    });
  }

  formatTimes(document);
})();
