<#
.SYNOPSIS
  sessiontrail Windows agent: sends session_notify / session_end_event records
  (docs/agent-events.md) to a sessiontrail http_server.

.DESCRIPTION
  Started by Task Scheduler event triggers (see README.md):
    -Trigger logon           Security 4624 (LogonType 10 RDP / 2 console), LSM 21
    -Trigger remote-session  RCM 1149, LSM 25 (reconnect)
    -Trigger logoff          Security 4634 / 4647, LSM 23
    -Trigger disconnect      LSM 24 / 40
  The record is built from templates\<event_type>.json, written to a local queue
  (%ProgramData%\sessiontrail\queue), then the queue is sent in order. A record leaves the
  queue only when the server accepted it (2xx) or rejected it for good (listed in
  "rejected", or a 4xx other than 401/403/408/429: moved to queue\rejected). On 429/503,
  5xx or no connection it retries with doubling backoff up to -RetryForSeconds; records
  left over are sent by the next run. Works on Windows PowerShell 5.1 and PowerShell 7.

.NOTES
  Configuration: %ProgramData%\sessiontrail\agent.json
    { "url": "https://audit.example.com:8443", "token_file": "C:\\ProgramData\\sessiontrail\\token",
      "resource_id": "res-rds-waw-01", "top_processes": 5 }
  The token file should be readable by SYSTEM and Administrators only.
#>
[CmdletBinding()]
param(
  [Parameter(Mandatory = $true)]
  [ValidateSet('logon', 'remote-session', 'logoff', 'disconnect')]
  [string]$Trigger,
  [string]$LogName = '',
  [int]$EventId = 0,
  [long]$EventRecordId = 0,
  [int]$LogonType = -1,
  [int]$ReasonCode = -1,
  [int]$WindowsSessionId = -1,
  [string]$TargetUser = '',
  [string]$TargetLogonId = '',
  [string]$ClientAddress = '',
  [string]$ClientName = '',
  [int]$RetryForSeconds = 120,
  [string]$ConfigFile = (Join-Path $env:ProgramData 'sessiontrail\agent.json')
)

$ErrorActionPreference = 'Stop'
$Root = Join-Path $env:ProgramData 'sessiontrail'
$QueueDir = Join-Path $Root 'queue'
$RejectedDir = Join-Path $QueueDir 'rejected'
$SessionsDir = Join-Path $Root 'sessions'
$MaxBackoffSeconds = 60
# A slow server must not hold the scheduled task forever.
$RequestTimeoutSeconds = 30

function Write-AgentLog([string]$Message) {
  try {
    if (-not [System.Diagnostics.EventLog]::SourceExists('sessiontrail')) {
      New-EventLog -LogName Application -Source 'sessiontrail'
    }
    Write-EventLog -LogName Application -Source 'sessiontrail' -EventId 1000 -EntryType Warning -Message $Message
  } catch {
    Add-Content -Path (Join-Path $Root 'agent.log') -Value ("{0} {1}" -f (Get-Date -Format o), $Message)
  }
}

function Read-Config {
  $cfg = @{ url = ''; token_file = (Join-Path $Root 'token'); resource_id = $env:COMPUTERNAME; top_processes = 5 }
  if (Test-Path $ConfigFile) {
    $json = Get-Content -Raw -Encoding UTF8 $ConfigFile | ConvertFrom-Json
    foreach ($p in $json.PSObject.Properties) { $cfg[$p.Name] = $p.Value }
  }
  return $cfg
}

function Get-Template([string]$EventType) {
  $path = Join-Path $PSScriptRoot ("templates\{0}.json" -f $EventType)
  return Get-Content -Raw -Encoding UTF8 $path | ConvertFrom-Json
}

# One session_id per connection: made at logon / reconnect, kept per Windows session id
# until the matching logoff / disconnect.
function Get-SessionFile([int]$WinSession) { Join-Path $SessionsDir ("{0}.json" -f $WinSession) }

function Get-WindowsSessionId {
  if ($WindowsSessionId -ge 0) { return $WindowsSessionId }
  try { return (Get-Process -Id $PID).SessionId } catch { return 0 }
}

function Get-SourceEvent {
  if ($LogName -eq '') { return @() }
  $s = [ordered]@{ log = $LogName; event_id = $EventId; record_id = $EventRecordId }
  if ($LogonType -ge 0) { $s.logon_type = $LogonType }
  if ($ReasonCode -ge 0) { $s.reason_code = $ReasonCode }
  return , @([pscustomobject]$s)
}

function Get-TopProcesses([int]$WinSession, [int]$Count) {
  if ($Count -le 0) { return @() }
  $procs = Get-Process | Where-Object { $_.SessionId -eq $WinSession } |
    Sort-Object -Property CPU -Descending | Select-Object -First $Count
  $out = @()
  foreach ($p in $procs) {
    $out += [pscustomobject][ordered]@{ name = $p.ProcessName; pid = $p.Id; cpu_time_s = [math]::Round([double]$p.CPU, 1) }
  }
  return , $out
}

function New-SessionRecord($Cfg) {
  $win = Get-WindowsSessionId
  $now = Get-Date
  $user = if ($TargetUser -ne '') { $TargetUser } else { "{0}\{1}" -f $env:USERDOMAIN, $env:USERNAME }
  $sessionFile = Get-SessionFile $win
  if ($Trigger -eq 'logon' -or $Trigger -eq 'remote-session') {
    $rec = Get-Template 'session_notify'
    $rec.session_id = [guid]::NewGuid().ToString()
    $rec.event_trigger = $Trigger
    $rec.channel_type = if ($LogonType -eq 2 -or ($ClientAddress -eq '' -and $ClientName -eq '')) { 'Console' } else { 'RDP' }
    $rec.windows_session_id = $win
    $rec.user_name = $user.Split('\')[-1]
    try { $rec.user_sid = ([System.Security.Principal.NTAccount]$user).Translate([System.Security.Principal.SecurityIdentifier]).Value } catch { $rec.user_sid = $null }
    $ip = $null
    if ($ClientAddress -ne '' -and $ClientAddress -ne '-' -and $ClientAddress -ne 'LOCAL') { $ip = $ClientAddress }
    $rec.client = [pscustomobject][ordered]@{ host = $(if ($ClientName -ne '') { $ClientName } else { $null }); ip = $ip }
    $os = Get-CimInstance Win32_OperatingSystem
    $rec.client_env.os = 'Windows'
    $rec.client_env.os_version = $os.Version
    $rec.client_env.app = $(if ($rec.channel_type -eq 'RDP') { 'mstsc' } else { 'console' })
    $rec.processes = @()
    New-Item -ItemType Directory -Force -Path $SessionsDir | Out-Null
    @{ session_id = $rec.session_id; started = $now.ToUniversalTime().ToString('o') } |
      ConvertTo-Json -Compress | Set-Content -Encoding UTF8 $sessionFile
  } else {
    $rec = Get-Template 'session_end_event'
    $rec.end_trigger = $Trigger
    # LSM 40 reason codes 0 (client dropped) and 5 (replaced) are failures; an idle
    # disconnect policy shows up as reason 3/4 (timeout); anything else is the user.
    $rec.reason = switch ($ReasonCode) { { $_ -in 0, 5 } { 'failure' } { $_ -in 3, 4 } { 'timeout' } default { 'user' } }
    $rec.duration_s = $null
    if (Test-Path $sessionFile) {
      $known = Get-Content -Raw $sessionFile | ConvertFrom-Json
      $rec.session_id = $known.session_id
      $rec.duration_s = [int]($now.ToUniversalTime() - [datetime]::Parse($known.started).ToUniversalTime()).TotalSeconds
      Remove-Item -Force $sessionFile
    } else {
      # The logon happened before the agent was installed: an end-only session.
      $rec.session_id = [guid]::NewGuid().ToString()
    }
    $rec.resource_usage.top_processes = Get-TopProcesses $win ([int]$Cfg.top_processes)
  }
  $rec.event_id = [guid]::NewGuid().ToString()
  $rec.timestamp = $now.ToString('o')
  $rec.resource_id = [string]$Cfg.resource_id
  $rec.host_name = $env:COMPUTERNAME
  $rec.user_id = $user
  $rec.logon_id = $(if ($TargetLogonId -ne '') { $TargetLogonId } else { $null })
  $rec.source_events = Get-SourceEvent
  return $rec
}

function Add-ToQueue($Record) {
  New-Item -ItemType Directory -Force -Path $QueueDir, $RejectedDir | Out-Null
  $name = "{0:D19}-{1}.json" -f [DateTime]::UtcNow.Ticks, $Record.event_id
  $tmp = Join-Path $QueueDir ".$name.tmp"
  # UTF-8 without BOM, one compact JSON object (the wire format of corpus section A).
  $json = $Record | ConvertTo-Json -Compress -Depth 6
  [System.IO.File]::WriteAllText($tmp, $json, (New-Object System.Text.UTF8Encoding($false)))
  Move-Item -Force $tmp (Join-Path $QueueDir $name)
}

# Returns 'sent', 'rejected' or 'retry'.
function Send-QueuedRecord($Cfg, [string]$File, [string]$Token) {
  $body = [System.IO.File]::ReadAllBytes($File)
  $headers = @{ Authorization = "Bearer $Token" }
  try {
    $resp = Invoke-WebRequest -UseBasicParsing -Method Post -Uri ("{0}/api/events" -f $Cfg.url) `
      -Headers $headers -ContentType 'application/json; charset=utf-8' -Body $body -TimeoutSec $RequestTimeoutSeconds
    $answer = $resp.Content | ConvertFrom-Json
    if ($answer.rejected -and @($answer.rejected).Count -gt 0) {
      Write-AgentLog ("server rejected {0}: {1}" -f (Split-Path -Leaf $File), $resp.Content)
      return 'rejected'
    }
    return 'sent'
  } catch {
    $status = 0
    if ($_.Exception.Response) { $status = [int]$_.Exception.Response.StatusCode }
    if ($status -in 401, 403) { Write-AgentLog "server refused the token (HTTP $status)"; return 'retry' }
    if ($status -ge 400 -and $status -lt 500 -and $status -notin 408, 429) {
      Write-AgentLog ("server will never accept {0} (HTTP {1})" -f (Split-Path -Leaf $File), $status)
      return 'rejected'
    }
    return 'retry'
  }
}

function Send-Queue($Cfg) {
  if (-not $Cfg.url) { Write-AgentLog "no url in $ConfigFile; records stay queued"; return $true }
  $token = (Get-Content -Raw $Cfg.token_file).Trim()
  $deadline = (Get-Date).AddSeconds($RetryForSeconds)
  $wait = 1
  while ($true) {
    $pending = Get-ChildItem -Path $QueueDir -Filter '*.json' -File | Sort-Object Name
    $stalled = $false
    foreach ($f in $pending) {
      switch (Send-QueuedRecord $Cfg $f.FullName $token) {
        'sent' { Remove-Item -Force $f.FullName }
        'rejected' { Move-Item -Force $f.FullName $RejectedDir }
        default { $stalled = $true }
      }
      if ($stalled) { break }
    }
    if (-not $stalled) { return $true }
    if ((Get-Date).AddSeconds($wait) -gt $deadline) { return $false }
    Start-Sleep -Seconds $wait
    $wait = [math]::Min($wait * 2, $MaxBackoffSeconds)
  }
}

# Only one sender at a time: a named mutex shared by all task instances.
$cfg = Read-Config
Add-ToQueue (New-SessionRecord $cfg)
$mutex = New-Object System.Threading.Mutex($false, 'Global\sessiontrail-agent')
if ($mutex.WaitOne(0)) {
  try {
    if (-not (Send-Queue $cfg)) { Write-AgentLog 'server unreachable; records stay queued for the next run' }
  } finally { $mutex.ReleaseMutex() }
}
exit 0
