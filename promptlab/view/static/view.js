// promptlab view: the only script its pages run (the Content-Security-Policy allows no other).
// It filters a run's results (a page in the browser, more than a page through the server), and
// keeps a running run's counters and a running optimization's chart current by asking the viewer's
// own JSON endpoints every second. It writes text with textContent; the chart's markup comes
// escaped from the server.
(function () {
  "use strict";
  var POLL_MS = 1000;

  function poll(url, apply) {
    function tick() {
      fetch(url, {credentials: "same-origin", cache: "no-store"})
        .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.json(); })
        .then(function (data) { if (apply(data)) { setTimeout(tick, POLL_MS); } })
        .catch(function () { setTimeout(tick, POLL_MS * 5); });
    }
    setTimeout(tick, POLL_MS);
  }

  function set(id, text) {
    var el = document.getElementById(id);
    if (el) { el.textContent = text; }
  }

  var search = document.getElementById("search"), status = document.getElementById("status-filter");
  var results = document.getElementById("result-filter");
  if (results && results.getAttribute("data-paged") === "1") {
    // more results than a page: the server filters (the text on Enter, the status as it changes)
    status.addEventListener("change", function () { results.submit(); });
  } else if (search && status) {
    results.addEventListener("submit", function (e) { e.preventDefault(); });
    var items = document.querySelectorAll("#results .case");
    var filter = function () {
      var text = search.value.toLowerCase(), kind = status.value, shown = 0;
      for (var i = 0; i < items.length; i++) {
        var ok = (!kind || items[i].getAttribute("data-status") === kind) &&
                 (!text || items[i].textContent.toLowerCase().indexOf(text) >= 0);
        items[i].hidden = !ok;
        if (ok) { shown++; }
      }
      set("shown", shown + " of " + items.length + " shown");
    };
    search.addEventListener("input", filter);
    status.addEventListener("change", filter);
    filter();
  }

  var live = document.getElementById("live");
  if (live && live.getAttribute("data-status") === "running") {
    poll(live.getAttribute("data-url"), function (p) {
      set("live-done", p.done);
      var counts = document.querySelectorAll(".result-count");  // the header's count, as the card's
      for (var i = 0; i < counts.length; i++) { counts[i].textContent = p.done; }
      set("live-total", p.total);
      set("live-status", p.status);
      set("live-passed", p.passed);
      set("live-errors", p.errors);
      set("live-cached", p.cached);
      set("live-pass-rate", p.pass_rate === null ? "–" : (100 * p.pass_rate).toFixed(1) + "%");
      set("live-rate", p.calls_per_s === null ? "–" : p.calls_per_s.toFixed(1));
      if (p.status !== "running") {
        set("live-note", "the run ended: reload for its scores and results");
        return false;
      }
      return true;
    });
  }

  var chart = document.getElementById("live-chart"), trajectory = document.getElementById("trajectory");
  if (chart && trajectory && chart.getAttribute("data-status") === "running") {
    poll(chart.getAttribute("data-url"), function (c) {
      trajectory.innerHTML = c.html;
      return c.status === "running";
    });
  }

  var form = document.getElementById("compare-form"), button = document.getElementById("compare-button");
  if (form && button) {
    var boxes = form.querySelectorAll("input[name=run]");
    var check = function () {
      var ticked = 0;
      for (var i = 0; i < boxes.length; i++) { if (boxes[i].checked) { ticked++; } }
      button.disabled = ticked !== 2;
    };
    form.addEventListener("change", check);
    check();
  }
})();
