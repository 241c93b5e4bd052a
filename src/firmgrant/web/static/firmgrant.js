// Live countdowns: every <time data-countdown> says how long until (or since) it, in words.
// They count from the server's now (<body data-now>), not the browser's: one clock per page,
// whatever the browser's clock says (or the demo's, which runs a day ahead).
(function () {
  "use strict";
  var offset = 0;
  function serverNow() { return Date.now() + offset; }
  // display.in_words' twin: the largest unit and the next one down.
  var units = [[86400, "day"], [3600, "hour"], [60, "minute"], [1, "second"]];
  function plural(amount, unit) { return amount + " " + unit + (amount === 1 ? "" : "s"); }
  function words(seconds) {
    var past = seconds < 0, left = Math.floor(Math.abs(seconds)), text = "0 seconds";
    for (var i = 0; i < units.length; i++) {
      if (left >= units[i][0]) {
        var amount = Math.floor(left / units[i][0]), rest = left % units[i][0];
        text = plural(amount, units[i][1]);
        if (i + 1 < units.length && rest >= units[i + 1][0]) {
          text += " " + plural(Math.floor(rest / units[i + 1][0]), units[i + 1][1]);
        }
        break;
      }
    }
    return past ? text + " ago" : "in " + text;
  }
  function tick() {
    var now = serverNow();
    document.querySelectorAll("time[data-countdown]").forEach(function (el) {
      var at = Date.parse(el.getAttribute("datetime"));
      if (isNaN(at)) { return; }
      var next = el.nextElementSibling;
      if (next && next.classList.contains("words")) { next.textContent = "(" + words((at - now) / 1000) + ")"; }
    });
    var clock = document.querySelector("[data-clock]");
    if (clock) { clock.textContent = "Now " + new Date(now).toISOString().slice(0, 16).replace("T", " ") + " UTC."; }
  }
  document.addEventListener("DOMContentLoaded", function () {
    var told = Date.parse(document.body.getAttribute("data-now") || "");
    if (!isNaN(told)) { offset = told - Date.now(); }
    tick();
    setInterval(tick, 1000);
  });
  document.addEventListener("htmx:afterSwap", tick);
})();
