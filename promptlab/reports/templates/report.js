(function(){
var q=document.getElementById('filter');if(!q){return;}
var items=document.querySelectorAll('.case');var count=document.getElementById('filter-count');
function apply(){var t=q.value.toLowerCase();var shown=0;
for(var i=0;i<items.length;i++){var ok=!t||items[i].textContent.toLowerCase().indexOf(t)>=0;
items[i].hidden=!ok;if(ok){shown++;}}
count.textContent=shown+' of '+items.length+' shown';}
q.addEventListener('input',apply);apply();})();
